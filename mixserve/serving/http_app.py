"""The HTTP ingress: an OpenAI-compatible FastAPI app over the service, one per Serve replica
(mixserve/serving/app.py builds it) or in a test's process. FastAPI parses each body into its type
(openai_models.py), so /openapi.json describes every route; every refusal, FastAPI's own included,
answers in OpenAI's error shape with the offending field named (docs/serving.md, "Errors").
(No `from __future__ import annotations` here: FastAPI reads the routes' annotations at runtime.)
"""
import os
import socket

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRouter
from starlette.exceptions import HTTPException

from mixserve.router.request import RequestError

from .http_guard import error_response, guarded_route
from .openai_http import Shaper, error_body, events, to_request, validation_error
from .openai_models import (ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest, ErrorResponse, Health,
                            ModelList)
from .service import EnsembleService

ERRORS = {"4XX": {"model": ErrorResponse, "description": "bad input, a missing key, an unknown model, a body too "
                                                        "large, or too many sessions at once"},
          "5XX": {"model": ErrorResponse, "description": "a member failed on the request or stayed down"}}
# Which router replica streams a completion (host:pid): an operator's trace of a request across replicas, and the
# scale-out tests' way to tell the requests a killed replica held from the others'.
ROUTER = {"x-mixserve-router": f"{socket.gethostname()}:{os.getpid()}"}
# The event-stream schema describes one server-sent event (its fields, as an SSE client reads them):
# schemathesis validates each event of a streamed answer against it.
EVENT = {"type": "object", "required": ["data"],
         "properties": {"data": {"type": "string", "description": "a chunk's JSON, or [DONE]"}, "event": {"type": "string"},
                        "id": {"type": "string"}, "retry": {"type": "integer"}}}
STREAMED = {200: {"content": {"text/event-stream": {"schema": EVENT}},
                  "description": "the completion; with stream: true, server-sent events: `data: {chunk}` per stretch "
                                 "of text (the member that wrote it in choices[].member), a usage chunk if asked, "
                                 "`data: [DONE]`"}}


def http_app(service: EnsembleService) -> FastAPI:
    """The app over `service`, bounded by its config's max_body_bytes."""
    app = FastAPI(title="mixserve", summary="An ensemble of language models served as one, OpenAI-compatible.",
                  version="0.1.0")
    api = APIRouter(route_class=guarded_route(service, service.config.max_body_bytes), responses=ERRORS)

    # Serve's proxy answers /-/healthz itself (proxy liveness); /health asks the members.
    @app.get("/health", response_model=Health, responses={503: {"model": Health, "description": "degraded"}})
    async def health():
        live, down = await service.health()
        ok = live is not None
        return JSONResponse(Health(status="ok" if ok else "degraded", live_sessions=live, replicas_down=down,
                                   active_sessions=service.admission.active).model_dump(),
                            status_code=200 if ok else 503)

    @api.get("/v1/models", response_model=ModelList, response_model_exclude_unset=True)
    async def models():
        return {"object": "list", "data": [{"object": "model", "owned_by": "mixserve", **m} for m in service.models()]}

    @api.post("/v1/completions", response_model=Completion, responses=STREAMED)
    async def completions(body: CompletionRequest, request: Request):
        return await _generate(service, body, request.state.owner, chat=False)

    @api.post("/v1/chat/completions", response_model=ChatCompletion, responses=STREAMED)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await _generate(service, body, request.state.owner, chat=True)

    app.include_router(api)
    app.add_exception_handler(RequestError, _refused)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    return app


async def _generate(service: EnsembleService, body, owner: str, chat: bool):
    req, stream, include_usage = to_request(body, chat)
    plan = service.validate(req, owner)
    shaper = Shaper(req.model or service.config.model_name, chat)
    if not stream:
        return shaper.full(await service.generate(plan))
    items = service.stream(plan)
    # A refusal that comes later (admission, an unknown session, a prompt past a member's context)
    # fails here too, with its status code, not mid-stream.
    first = await items.__anext__()
    return StreamingResponse(events(first, items, shaper, plan.method, include_usage), media_type="text/event-stream",
                             headers=ROUTER)


async def _refused(_: Request, e: RequestError) -> JSONResponse:
    return error_response(e)


async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 for a body that does not fit its type, as our 400 naming the field."""
    return error_response(validation_error(e.errors()))


async def _http_error(_: Request, e: HTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own refusals (an unknown path, a wrong method, a body FastAPI could not
    parse) in the same shape as ours."""
    error = RequestError(str(e.detail))
    error.status = e.status_code
    return JSONResponse(error_body(error), status_code=e.status_code, headers=e.headers)

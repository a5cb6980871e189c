"""What the HTTP ingress checks before FastAPI parses a body (docs/serving.md, "Limits"): the client's
key, then the body's size, then how deep it nests. A body over `max_body_bytes` is refused with 413
before it is read: at once when its Content-Length says so, else the moment the bytes counted while it
streams in (a chunked upload) pass the bound. A refusal answers in OpenAI's error shape. These are the
wire's checks; what a request may ask is router/request.py's `validate`, for gRPC too."""
from __future__ import annotations

import re

import numpy as np
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from mixserve.router.request import RequestError

from .openai_http import error_body
from .service import EnsembleService

# The deepest body this API takes nests 3 levels ({"messages": [{"role": ...}]}, {"prompt": [[ids]]});
# parsing and validating far deeper ones (5,000 `[`) only costs the server.
MAX_JSON_DEPTH = 16
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN_CLOSE = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 and, as int8, -1
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


class BodyTooLargeError(RequestError):
    status = 413
    code = "body_too_large"


def error_response(e: RequestError) -> JSONResponse:
    return JSONResponse(error_body(e), status_code=e.status)


def guarded_route(service: EnsembleService, max_body_bytes: int) -> type[APIRoute]:
    """A route class whose requests pass the key and the body's bounds before anything else runs."""

    class GuardedRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                request = BoundedRequest(request.scope, request.receive, max_body_bytes)
                try:
                    # who the caller is (a session belongs to its key): the routes read it there
                    request.state.owner = service.authorize(request.headers.get("authorization"))
                    if request.method == "POST":
                        check_depth(await request.body())
                except RequestError as e:
                    return error_response(e)
                return await handler(request)  # FastAPI reads the body read above

            return guarded

    return GuardedRoute


class BoundedRequest(Request):
    """A request whose body is read at most `limit` bytes far (FastAPI's documented way to change how
    a body is read: a Request subclass caching it in `_body`, where Starlette's own body() does)."""

    def __init__(self, scope, receive, limit: int):
        super().__init__(scope, receive)
        self.limit = limit

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.limit:
                raise BodyTooLargeError(f"request body is {declared} bytes; this server takes at most {self.limit} "
                                        f"(max_body_bytes)")
            chunks, size = [], 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > self.limit:
                    raise BodyTooLargeError(f"request body is over {self.limit} bytes, the most this server "
                                            f"takes (max_body_bytes)")
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body


def check_depth(body: bytes) -> None:
    """Refuses a body whose arrays and objects nest past MAX_JSON_DEPTH, counted on the bytes outside
    its strings, before any parser recurses into it."""
    steps = _STRING.sub(b"", body).translate(_OPEN_CLOSE, _NOT_BRACKETS)
    depth = int(np.frombuffer(steps, dtype=np.int8).cumsum().max()) if steps else 0
    if depth > MAX_JSON_DEPTH:
        raise RequestError(f"request body nests {depth} levels deep; this API takes at most {MAX_JSON_DEPTH}")

"""The Ray Serve application: one ingress deployment serving OpenAI-compatible HTTP and gRPC over
the router; the members are Ray actors it starts from the config (docs/architecture.md, "Shape").

`build_app(config)` is the one entry point: `mixserve serve` deploys it, and so does
`serve run cluster/serve.yaml` through `app_builder`. (No `from __future__ import annotations` here:
FastAPI reads the route signatures' annotations at runtime.)
"""
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from mixserve import cluster
from mixserve.config import EnsembleConfig, load_config, parse_config
from mixserve.router.request import RequestError

from .ensemble import build_ensemble

from .grpc_service import start_grpc
from .metrics import Metrics
from .openai_http import Shaper, error_body, events, parse
from .service import EnsembleService

http = FastAPI(title="mixserve")


# Admission control bounds the work; Serve's own queue limit only needs to stay above it.
@serve.deployment(max_ongoing_requests=4096)
@serve.ingress(http)
class Ingress:
    async def __init__(self, config: EnsembleConfig, grpc_host: str | None = None, grpc_port: int | None = None):
        self.metrics = Metrics()
        self.ensemble = build_ensemble(config, metrics=self.metrics)
        self.service = EnsembleService(self.ensemble.router, self.metrics)
        self.grpc = await start_grpc(self.service, grpc_host, grpc_port) if grpc_port else None

    # Serve's proxy answers /-/healthz itself (proxy liveness); /health asks the members.
    @http.get("/health")
    async def health(self):
        """live_sessions: sessions each member holds; active_sessions: sessions this router has
        admitted and not finished (what max_concurrent_sessions bounds)."""
        live = await self.service.live_sessions()
        ok = live is not None
        return JSONResponse({"status": "ok" if ok else "degraded", "live_sessions": live,
                             "active_sessions": self.service.admission.active}, status_code=200 if ok else 503)

    @http.get("/v1/models")
    async def models(self, request: Request):
        try:
            self.service.authorize(request.headers.get("authorization"))
        except RequestError as e:
            return JSONResponse(error_body(e), status_code=e.status)
        data = [{"object": "model", "owned_by": "mixserve", **m} for m in self.service.models()]
        return {"object": "list", "data": data}

    @http.post("/v1/completions")
    async def completions(self, request: Request):
        return await self._generate(request, chat=False)

    @http.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        return await self._generate(request, chat=True)

    async def _generate(self, request: Request, chat: bool):
        try:
            owner = self.service.authorize(request.headers.get("authorization"))
            try:
                body = await request.json()
            except ValueError:
                raise RequestError("request body is not valid JSON") from None
            req, stream, include_usage = parse(body, chat)
            plan = self.service.validate(req, owner)
            shaper = Shaper(req.model or self.service.config.model_name, chat)
            if not stream:
                return shaper.full(await self.service.generate(plan))
            items = self.service.stream(plan)
            # A refusal that comes later (admission, an unknown session, a prompt past a member's
            # context) fails here too, with its status code, not mid-stream.
            first = await items.__anext__()
        except RequestError as e:
            return JSONResponse(error_body(e), status_code=e.status)
        return StreamingResponse(events(first, items, shaper, plan.method, include_usage),
                                 media_type="text/event-stream")


def build_app(config: EnsembleConfig, grpc_host: str = "127.0.0.1", grpc_port: "int | None" = 9000,
              ingress_resources: "dict | None" = None):
    """`ingress_resources` pins the ingress replica (and so its gRPC port) to nodes declaring them."""
    options = {"num_cpus": 0, "resources": ingress_resources or {}}
    return Ingress.options(ray_actor_options=options).bind(config, grpc_host, grpc_port)


def app_builder(args: dict):
    """For Serve config files (cluster/serve.yaml, KubeRay's serveConfigV2): `import_path:
    mixserve.serving.app:app_builder` with args `config` (a path; a bare name such as default.yaml is
    looked up in mixserve's cluster/ folder too) or `ensemble` (the config inline, as `mixserve k8s
    render` writes it), and `grpc_host`, `grpc_port`, `ingress_resources`."""
    if "ensemble" in args:
        config = parse_config(args["ensemble"])
    else:
        path = Path(args["config"])
        if not path.exists() and (Path(cluster.__file__).parent / path.name).exists():
            path = Path(cluster.__file__).parent / path.name
        config = load_config(path)
    return build_app(config, args.get("grpc_host", "127.0.0.1"), args.get("grpc_port", 9000),
                     args.get("ingress_resources"))

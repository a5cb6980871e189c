"""The Ray Serve application: one ingress deployment serving OpenAI-compatible HTTP and gRPC over
the router; the members are Ray actors it starts from the config (docs/architecture.md, "Shape").

`build_app(config)` is the one entry point: `mixserve serve` deploys it, and so does
`serve run cluster/serve.yaml` through `app_builder`.
"""
from pathlib import Path

from ray import serve

from mixserve import cluster
from mixserve.config import EnsembleConfig, load_config, parse_config

from .ensemble import build_ensemble
from .grpc_service import start_grpc
from .http_app import http_app
from .metrics import Metrics
from .service import EnsembleService


# Admission control bounds the work; Serve's own queue limit only needs to stay above it.
@serve.deployment(max_ongoing_requests=4096)
@serve.ingress()
class Ingress:
    async def __init__(self, config: EnsembleConfig, grpc_host: str | None = None, grpc_port: int | None = None):
        self.metrics = Metrics()
        self.ensemble = build_ensemble(config, metrics=self.metrics)
        self.service = EnsembleService(self.ensemble.router, self.metrics)
        self.grpc = await start_grpc(self.service, grpc_host, grpc_port) if grpc_port else None

    def __serve_build_asgi_app__(self):
        """Serve asks for the HTTP app once this replica's service exists (mixserve/serving/http_app.py)."""
        return http_app(self.service)


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

"""The Ray Serve application (docs/architecture.md, "Shape" and "Pools"): the ingress deployment, each
replica a router serving OpenAI-compatible HTTP and gRPC (`router: {replicas | autoscaling}` in the
config), and the pools' keeper, a deployment of one replica that starts, replaces and sizes the member
replicas (cluster/pools.py). The members belong to the keeper, not to a router: a router replica that
dies loses only its requests in flight, and its replacement attaches to the same members.

`build_app(config)` is the one entry point: `mixserve serve` deploys it, and so does
`serve run cluster/serve.yaml` through `app_builder`.
"""
from pathlib import Path

from ray import serve

from mixserve import cluster
from mixserve.cluster.pools import PoolKeeper
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
    async def __init__(self, config: EnsembleConfig, pools, grpc_host: str | None = None, grpc_port: int | None = None):
        self.metrics = Metrics()
        view = await pools.view.remote()  # the keeper's Serve handle answers only awaited, on this loop
        self.ensemble = build_ensemble(config, metrics=self.metrics, keeper=pools, view=view)
        self.service = EnsembleService(self.ensemble.router, self.metrics)
        self.grpc = await start_grpc(self.service, grpc_host, grpc_port) if grpc_port else None

    def __serve_build_asgi_app__(self):
        """Serve asks for the HTTP app once this replica's service exists (mixserve/serving/http_app.py)."""
        return http_app(self.service)


# One replica: the pools are one keeper's. Serve restarts it if it dies (its members go with it: it owns them).
@serve.deployment(num_replicas=1, max_ongoing_requests=4096, ray_actor_options={"num_cpus": 0})
class Pools:
    async def __init__(self, config: EnsembleConfig):
        self.keeper = PoolKeeper(config)
        await self.keeper.ready()  # the app is up once every member has loaded

    def view(self) -> dict:
        return self.keeper.view()

    def sizes(self) -> dict[str, int]:
        return self.keeper.sizes()

    async def pids(self) -> dict[str, int]:
        return await self.keeper.pids()

    def scaling(self) -> list:
        return self.keeper.autoscaler.history


def build_app(config: EnsembleConfig, grpc_host: str = "127.0.0.1", grpc_port: "int | None" = 9000,
              ingress_resources: "dict | None" = None, pools_resources: "dict | None" = None):
    """`ingress_resources` pins the ingress replicas (and so their gRPC port) to nodes declaring them,
    `pools_resources` the pools' keeper (KubeRay: the head, cluster/kuberay.py).
    Several replicas on a node share the gRPC port (SO_REUSEPORT, gRPC's default on Linux): a client's
    connection lands on one of them, and a new one on a replica that is alive."""
    options = {"num_cpus": 0, "resources": ingress_resources or {}}
    scale = config.router
    if scale.autoscaling is not None:
        a = scale.autoscaling
        sizing = {"autoscaling_config": {"min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
                                         "target_ongoing_requests": a.target, "upscale_delay_s": a.upscale_delay_s,
                                         "downscale_delay_s": a.downscale_delay_s}}
    else:
        sizing = {"num_replicas": scale.replicas}
    pools = Pools.options(ray_actor_options={"num_cpus": 0, "resources": pools_resources or {}}).bind(config)
    return Ingress.options(ray_actor_options=options, **sizing).bind(config, pools, grpc_host, grpc_port)


def app_builder(args: dict):
    """For Serve config files (cluster/serve.yaml, KubeRay's serveConfigV2): `import_path:
    mixserve.serving.app:app_builder` with args `config` (a path; a bare name such as default.yaml is
    looked up in mixserve's cluster/ folder too) or `ensemble` (the config inline, as `mixserve k8s
    render` writes it), and `grpc_host`, `grpc_port`, `ingress_resources`, `pools_resources`."""
    if "ensemble" in args:
        config = parse_config(args["ensemble"])
    else:
        path = Path(args["config"])
        if not path.exists() and (Path(cluster.__file__).parent / path.name).exists():
            path = Path(cluster.__file__).parent / path.name
        config = load_config(path)
    return build_app(config, args.get("grpc_host", "127.0.0.1"), args.get("grpc_port", 9000),
                     args.get("ingress_resources"), args.get("pools_resources"))

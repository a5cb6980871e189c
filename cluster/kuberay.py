"""`mixserve k8s render`: the KubeRay RayService manifest, and the Service that carries gRPC to the
router replicas, made from the same ensemble config that `mixserve serve` reads, so the two can never
drift.

The head runs no work (num-cpus 0): Ray's control plane, Serve's controller and an HTTP proxy. The
router replicas (Serve deployment `Ingress`) run in worker group `router`, one per pod, and each member
pool in a worker group of its own, one replica per pod (cluster/kuberay_groups.py). How many: Serve's
own num_replicas or autoscaling_config for the router (config `router:`), the pools' sizes for the
groups (cluster/sizing.py); when anything autoscales, KubeRay's autoscaler adds the pods that waiting
replicas ask for and removes idle ones. HTTP reaches any router replica through Serve's proxy on every
pod; gRPC through Service mixserve-grpc over the router pods, each listening on its own port 9000.
"""
from __future__ import annotations

import yaml

from mixserve.config import EnsembleConfig, parse_config
from mixserve.scaling import Scale

from mixserve.cluster.kuberay_groups import (GRPC_PORT, HTTP_PORT, INGRESS_RESOURCE, METRICS_PORT, ROUTER_LABELS,
                                             container, member_groups, member_resource, resources_param, router_group)

RAY_VERSION = "2.60.0"
POOLS_RESOURCE = "mixserve_pools"  # the head's: where the pools' keeper runs
INGRESS_DEPLOYMENT = "Ingress"  # mixserve/serving/app.py's deployment, which serveConfigV2 scales
# A pod is removed this long after its last replica went (KubeRay's default); a pool's own delays
# (downscale_delay_s) decide when a replica goes.
IDLE_TIMEOUT_S = 60
LABELS = {"app.kubernetes.io/name": "mixserve"}

def pinned(raw: dict) -> dict:
    """The config as written, each member also asking for its own worker group's resource."""
    members = [{**m, "resources": {**(m.get("resources") or {}), member_resource(m["name"]): 1}}
               for m in raw["members"]]
    return {**raw, "members": members}


def manifests(raw: dict, image: str) -> list[dict]:
    """What `kubectl apply` takes: the RayService, then the gRPC Service."""
    return [render(raw, image), grpc_service()]


def render(raw: dict, image: str) -> dict:
    """The RayService: the Serve application with the router's scale, the head, the worker groups."""
    config = parse_config(raw, resolve_models=False)  # a bad config renders nothing
    serve_config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": HTTP_PORT},
        "applications": [{
            "name": "mixserve",
            "route_prefix": "/",
            "import_path": "mixserve.serving.app:app_builder",
            "args": {"ensemble": pinned(raw), "grpc_host": "0.0.0.0", "grpc_port": GRPC_PORT,
                     "ingress_resources": {INGRESS_RESOURCE: 1}, "pools_resources": {POOLS_RESOURCE: 1}},
            "deployments": [ingress_deployment(config.router)],
        }],
    }
    head = container("ray-head", image, cpus=1, memory_gi=2)
    head["ports"] = [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
                     {"containerPort": 10001, "name": "client"}, {"containerPort": HTTP_PORT, "name": "serve"},
                     {"containerPort": METRICS_PORT, "name": "metrics"}]
    groups = [router_group(config.router, image), *member_groups(config, image)]
    cluster = {"rayVersion": RAY_VERSION}
    if autoscales(config, groups):
        cluster["enableInTreeAutoscaling"] = True
        cluster["autoscalerOptions"] = {"idleTimeoutSeconds": IDLE_TIMEOUT_S, "upscalingMode": "Default"}
    # The pools' keeper lives on the head, beside Serve's controller: a router pod the autoscaler
    # removes when idle must not take the keeper, and with it every member, along.
    cluster["headGroupSpec"] = {"rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0",
                                                   "resources": resources_param({POOLS_RESOURCE: 1})},
                                "template": {"spec": {"containers": [head]}}}
    cluster["workerGroupSpecs"] = groups
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "mixserve", "labels": dict(LABELS)},
        "spec": {"serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False), "rayClusterConfig": cluster},
    }


def ingress_deployment(scale: Scale) -> dict:
    """Serve's scaling of the router replicas: a fixed count, or its autoscaling on ongoing requests."""
    if scale.autoscaling is None:
        return {"name": INGRESS_DEPLOYMENT, "num_replicas": scale.replicas}
    auto = scale.autoscaling
    return {"name": INGRESS_DEPLOYMENT, "autoscaling_config": {
        "min_replicas": auto.min_replicas, "max_replicas": auto.max_replicas,
        "target_ongoing_requests": auto.target,
        "upscale_delay_s": auto.upscale_delay_s, "downscale_delay_s": auto.downscale_delay_s}}


def autoscales(config: EnsembleConfig, groups: list[dict]) -> bool:
    """Whether pods must follow replicas: the router or a pool autoscales, or a group's size can move."""
    return (config.router.autoscaling is not None or any(m.autoscaling is not None for m in config.members)
            or any(g["minReplicas"] < g["maxReplicas"] for g in groups))


def grpc_service() -> dict:
    """gRPC clients' way in: a Service over the router pods, each of which listens on GRPC_PORT and is
    ready only while its replica answers gRPC health. Kubernetes balances connections, not calls: a
    client's channel stays on one replica and, if that one dies, reconnects to another."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "mixserve-grpc", "labels": dict(LABELS)},
        "spec": {"selector": dict(ROUTER_LABELS),
                 "ports": [{"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT, "appProtocol": "grpc"}]},
    }


def to_yaml(documents: list[dict]) -> str:
    """YAML documents with multi-line strings (serveConfigV2) as readable literal blocks."""
    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data) -> bool:
            return True  # shared values (the env list) written out in full: kubectl users read this file

    def text(dumper, value: str):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    header = "# Rendered by `mixserve k8s render`; edit the ensemble config, not this file.\n"
    return header + yaml.dump_all(documents, Dumper=Dumper, sort_keys=False, explicit_start=True)

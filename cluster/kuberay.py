"""`mixserve k8s render`: the KubeRay RayService manifest, made from the same ensemble config that
`mixserve serve` reads, so the two can never drift.

One worker group per member, each declaring a custom resource (mixserve_member_<name>) that only that
member asks for; the head runs no work (num-cpus 0) but hosts the ingress replica, pinned there by
mixserve_ingress so that the gRPC port is on a known pod.

Kubernetes gives a pod whole GPUs, while Ray shares a GPU by fractions: members asking for a fraction
of one (num_gpus: 0.5) share pods, packed first fit into pods of at most one GPU's worth. Such a pod
gets the GPUs its members' fractions add up to (rounded up), and its Ray node declares them and every
packed member's resource. (Ray takes no fraction above one GPU: the config refuses num_gpus 1.5.)
"""
from __future__ import annotations

import json
import math
import re

import yaml

from mixserve.cluster.ray_cluster import INLINE_BYTES
from mixserve.config import parse_config

RAY_VERSION = "2.60.0"
HTTP_PORT, GRPC_PORT = 8000, 9000
INGRESS_RESOURCE = "mixserve_ingress"
# Every Ray process in the pods reads it: ce's distributions come back inline (cluster/ray_cluster.py).
ENV = [{"name": "RAY_max_direct_call_object_size", "value": str(INLINE_BYTES)}]


def member_resource(name: str) -> str:
    return "mixserve_member_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def pinned(raw: dict) -> dict:
    """The config as written, each member also asking for its own worker group's resource."""
    members = [{**m, "resources": {**(m.get("resources") or {}), member_resource(m["name"]): 1}}
               for m in raw["members"]]
    return {**raw, "members": members}


def render(raw: dict, image: str) -> dict:
    config = parse_config(raw, resolve_models=False)  # a bad config renders nothing
    serve_config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": HTTP_PORT},
        "applications": [{
            "name": "mixserve",
            "route_prefix": "/",
            "import_path": "mixserve.serving.app:app_builder",
            "args": {"ensemble": pinned(raw), "grpc_host": "0.0.0.0", "grpc_port": GRPC_PORT,
                     "ingress_resources": {INGRESS_RESOURCE: 1}},
        }],
    }
    head = {
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0",
                           "resources": _resources_param({INGRESS_RESOURCE: 1})},
        "template": {"spec": {"containers": [{
            "name": "ray-head", "image": image, "env": ENV,
            "ports": [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
                      {"containerPort": 10001, "name": "client"}, {"containerPort": HTTP_PORT, "name": "serve"},
                      {"containerPort": GRPC_PORT, "name": "grpc"}, {"containerPort": 8080, "name": "metrics"}],
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        }]}},
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "mixserve", "labels": {"app.kubernetes.io/name": "mixserve"}},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
            "rayClusterConfig": {"rayVersion": RAY_VERSION, "headGroupSpec": head,
                                 "workerGroupSpecs": [_worker_group(pod, image) for pod in _pods(config.members)]},
        },
    }


def _pods(members) -> list[list]:
    """The members grouped by pod, in config order: fractions of a GPU packed first fit into pods of at
    most one GPU, every other member (whole GPUs or none) alone."""
    pods: list[list] = []
    shared: list[list] = []  # the pods that take fractions
    for m in members:
        gpus = _total([m], "num_gpus", 0)
        if gpus.is_integer():
            pods.append([m])
            continue
        pod = next((p for p in shared if _total([*p, m], "num_gpus", 0) <= 1), None)
        if pod is None:
            pod = []
            pods.append(pod)
            shared.append(pod)
        pod.append(m)
    return pods


def _total(members, key: str, default: float) -> float:
    # Ray counts resources in units of 0.0001: 0.1 + 0.2 + 0.7 is one GPU, not a hair more.
    return round(sum(float(m.resources.get(key, default)) for m in members), 4)


def _worker_group(pod: list, image: str) -> dict:
    gpus = math.ceil(_total(pod, "num_gpus", 0))
    cpus = max(1, math.ceil(_total(pod, "num_cpus", 1)))
    params = {"num-cpus": str(cpus), "resources": _resources_param({member_resource(m.name): 1 for m in pod})}
    limits = {"cpu": str(cpus + 1), "memory": f"{8 * len(pod)}Gi"}
    if gpus:
        params["num-gpus"] = str(gpus)
        limits["nvidia.com/gpu"] = str(gpus)
    names = [re.sub(r"[^a-z0-9-]", "-", m.name.lower()) for m in pod]
    return {
        "groupName": ("member-" if len(pod) == 1 else "members-") + "-".join(names),
        "replicas": 1, "minReplicas": 1, "maxReplicas": 1,
        "rayStartParams": params,
        "template": {"spec": {"containers": [{
            "name": "ray-worker", "image": image, "env": ENV,
            "resources": {"requests": {"cpu": str(cpus), "memory": f"{4 * len(pod)}Gi"}, "limits": limits},
        }]}},
    }


def _resources_param(resources: dict) -> str:
    # KubeRay passes this through a shell to `ray start --resources`: a quoted JSON string.
    return '"' + json.dumps(resources).replace('"', '\\"') + '"'


def to_yaml(manifest: dict) -> str:
    """YAML with multi-line strings (serveConfigV2) as readable literal blocks."""
    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data) -> bool:
            return True  # shared values (the env list) written out in full: kubectl users read this file

    def text(dumper, value: str):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    header = "# Rendered by `mixserve k8s render`; edit the ensemble config, not this file.\n"
    return header + yaml.dump(manifest, Dumper=Dumper, sort_keys=False)

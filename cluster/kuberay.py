"""`mixserve k8s render`: the KubeRay RayService manifest, made from the same ensemble config that
`mixserve serve` reads, so the two can never drift.

One worker group per member, each declaring a custom resource (mixserve_member_<name>) that only that
member asks for; the head runs no work (num-cpus 0) but hosts the ingress replica, pinned there by
mixserve_ingress so that the gRPC port is on a known pod.
"""
from __future__ import annotations

import json
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
            "import_path": "mixserve.router.app:app_builder",
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
                                 "workerGroupSpecs": [_worker_group(m, image) for m in config.members]},
        },
    }


def _worker_group(member, image: str) -> dict:
    gpus = int(member.resources.get("num_gpus", 0))
    cpus = max(1, int(member.resources.get("num_cpus", 1)))
    params = {"num-cpus": str(cpus), "resources": _resources_param({member_resource(member.name): 1})}
    limits = {"cpu": str(cpus + 1), "memory": "8Gi"}
    if gpus:
        params["num-gpus"] = str(gpus)
        limits["nvidia.com/gpu"] = str(gpus)
    return {
        "groupName": "member-" + re.sub(r"[^a-z0-9-]", "-", member.name.lower()),
        "replicas": 1, "minReplicas": 1, "maxReplicas": 1,
        "rayStartParams": params,
        "template": {"spec": {"containers": [{
            "name": "ray-worker", "image": image, "env": ENV,
            "resources": {"requests": {"cpu": str(cpus), "memory": "4Gi"}, "limits": limits},
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

"""The worker groups of the KubeRay render (cluster/kuberay.py): the router replicas' group and one per
member pool, sized from the config's scale keys (mixserve/scaling.py, cluster/sizing.py).

A pod holds one replica: it declares one unit of the custom resource that each replica asks for
(mixserve_ingress for a router replica, mixserve_member_<name> for a member's), so a pool of k replicas
is k pods. A group spans its pool's bounds (minReplicas..maxReplicas): when a pool grows, its new
replica waits for the resource and KubeRay's autoscaler adds a pod; when it shrinks, the emptied pod
is removed once idle.

Kubernetes gives a pod whole GPUs, while Ray shares a GPU by fractions: members asking for a fraction
of one (num_gpus: 0.5) share pods, packed first fit into pods of at most one GPU's worth. A shared pod
holds one replica of each member packed in it, so only pools of the same fixed size share pods (pod i
holds replica i of each), and a member sharing a GPU cannot autoscale: its pods are also its sharers'.
(Ray takes no fraction above one GPU: the config refuses num_gpus 1.5.)
"""
from __future__ import annotations

import json
import math
import re

from mixserve.cluster.ray_cluster import INLINE_BYTES
from mixserve.cluster.sizing import initial_sizes
from mixserve.config import ConfigError, EnsembleConfig
from mixserve.scaling import Scale

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 9000, 8080
INGRESS_RESOURCE = "mixserve_ingress"
# The router pods' labels: the gRPC Service (cluster/kuberay.py) selects the pods by them.
ROUTER_LABELS = {"app.kubernetes.io/name": "mixserve", "app.kubernetes.io/component": "router"}
# Every Ray process in the pods reads it: ce's distributions come back inline (cluster/ray_cluster.py).
ENV = [{"name": "RAY_max_direct_call_object_size", "value": str(INLINE_BYTES)}]


def member_resource(name: str) -> str:
    return "mixserve_member_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def bounds(scale: Scale, size: int) -> tuple[int, int]:
    """A pool's fewest and most replicas: autoscaling's range, else its fixed (or `auto`) size."""
    if scale.autoscaling is None:
        return size, size
    return scale.autoscaling.min_replicas, scale.autoscaling.max_replicas


def router_group(scale: Scale, image: str) -> dict:
    """The router replicas' pods (num-cpus 0 like the head: nothing else lands there, so an emptied pod
    can go). Each pod's gRPC port is its one replica's; the pod is ready, and so in the gRPC Service,
    once that replica answers gRPC's standard health check."""
    lo, hi = bounds(scale, scale.initial)
    ray = container("ray-router", image, cpus=1, memory_gi=2)
    ray["ports"] = [{"containerPort": HTTP_PORT, "name": "serve"}, {"containerPort": GRPC_PORT, "name": "grpc"},
                          {"containerPort": METRICS_PORT, "name": "metrics"}]
    ray["readinessProbe"] = {"grpc": {"port": GRPC_PORT}, "periodSeconds": 5, "failureThreshold": 2}
    return {
        "groupName": "router", "replicas": scale.initial, "minReplicas": lo, "maxReplicas": hi,
        "rayStartParams": {"num-cpus": "0", "resources": resources_param({INGRESS_RESOURCE: 1})},
        "template": {"metadata": {"labels": dict(ROUTER_LABELS)}, "spec": {"containers": [ray]}},
    }


def member_groups(config: EnsembleConfig, image: str) -> list[dict]:
    sizes = initial_sizes(config)
    return [_member_group(pod, sizes[pod[0].name], bounds(pod[0].scale, sizes[pod[0].name]), image)
            for pod in _pods(config.members, sizes)]


def _pods(members, sizes: dict[str, int]) -> list[list]:
    """The members grouped by pod, in config order: fractions of a GPU packed first fit into pods of at
    most one GPU among pools of the same fixed size, every other member (whole GPUs or none) alone."""
    pods: list[list] = []
    shared: list[list] = []  # the pods that take fractions
    for m in members:
        gpus = _total([m], "num_gpus", 0)
        if gpus.is_integer():
            pods.append([m])
            continue
        if m.autoscaling is not None:
            raise ConfigError(f"member {m.name}: num_gpus {gpus} shares a GPU, and so a pod, with other members, "
                              "which cannot autoscale on Kubernetes (a pod holds one replica of each member "
                              "it packs); give it a fixed replicas: N, or num_gpus: 1 to autoscale it alone")
        pod = next((p for p in shared if sizes[p[0].name] == sizes[m.name]
                    and _total([*p, m], "num_gpus", 0) <= 1), None)
        if pod is None:
            pod = []
            pods.append(pod)
            shared.append(pod)
        pod.append(m)
    return pods


def _total(members, key: str, default: float) -> float:
    # Ray counts resources in units of 0.0001: 0.1 + 0.2 + 0.7 is one GPU, not a hair more.
    return round(sum(float(m.resources.get(key, default)) for m in members), 4)


def _member_group(pod: list, size: int, pool: tuple[int, int], image: str) -> dict:
    gpus = math.ceil(_total(pod, "num_gpus", 0))
    cpus = max(1, math.ceil(_total(pod, "num_cpus", 1)))
    params = {"num-cpus": str(cpus), "resources": resources_param({member_resource(m.name): 1 for m in pod})}
    ray = container("ray-worker", image, cpus=cpus, memory_gi=4 * len(pod))
    if gpus:
        params["num-gpus"] = str(gpus)
        ray["resources"]["limits"]["nvidia.com/gpu"] = str(gpus)
    names = [re.sub(r"[^a-z0-9-]", "-", m.name.lower()) for m in pod]
    return {
        "groupName": ("member-" if len(pod) == 1 else "members-") + "-".join(names),
        "replicas": size, "minReplicas": pool[0], "maxReplicas": pool[1],
        "rayStartParams": params,
        "template": {"spec": {"containers": [ray]}},
    }


def container(name: str, image: str, cpus: int, memory_gi: int) -> dict:
    """A Ray container asking for `cpus` and `memory_gi`, allowed one more CPU and twice the memory."""
    return {"name": name, "image": image, "env": ENV,
            "resources": {"requests": {"cpu": str(cpus), "memory": f"{memory_gi}Gi"},
                          "limits": {"cpu": str(cpus + 1), "memory": f"{2 * memory_gi}Gi"}}}


def resources_param(resources: dict) -> str:
    # KubeRay passes this through a shell to `ray start --resources`: a quoted JSON string.
    return '"' + json.dumps(resources).replace('"', '\\"') + '"'

"""The KubeRay render carries the scale-out (cluster/kuberay_groups.py, cluster/kuberay.py): a worker
group per pool sized and bounded as the config says, one replica per pod, the router replicas as
Serve's num_replicas or autoscaling_config, KubeRay's autoscaler on whenever anything can move."""
import pytest
import yaml

from mixserve.cli import main
from mixserve.cluster.kuberay import IDLE_TIMEOUT_S, INGRESS_DEPLOYMENT, POOLS_RESOURCE, grpc_service, member_resource, render
from mixserve.cluster.kuberay_groups import INGRESS_RESOURCE
from mixserve.config import ConfigError
from mixserve.serving.app import Ingress
from tests.cluster.k8s_schema import declared, kubernetes_problems, problems

IMAGE = "ghcr.io/example/mixserve:0.1.0"


def member(name: str, weight: float, **keys) -> dict:
    return {"name": name, "model": name, "weight": weight, **keys}


def rendered(raw: dict) -> tuple[dict, dict, dict]:
    """A valid render's cluster, its groups' (replicas, min, max) by name, and the Serve application."""
    manifest = render(raw, IMAGE)
    assert problems(manifest) == []
    cluster = manifest["spec"]["rayClusterConfig"]
    sizes = {g["groupName"]: (g["replicas"], g["minReplicas"], g["maxReplicas"]) for g in cluster["workerGroupSpecs"]}
    (app,) = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"]
    return cluster, sizes, app


def group(cluster: dict, name: str) -> dict:
    return next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == name)


def test_fixed_pools_get_a_pod_per_replica_and_no_autoscaler():
    raw = {"members": [member("a", 0.5, replicas=3, resources={"num_gpus": 1}), member("b", 0.5)]}
    cluster, sizes, app = rendered(raw)
    assert sizes == {"router": (1, 1, 1), "member-a": (3, 3, 3), "member-b": (1, 1, 1)}
    assert "enableInTreeAutoscaling" not in cluster and "autoscalerOptions" not in cluster
    # Each replica asks for one unit of its member's resource and each pod declares one: 3 pods, 3 replicas.
    served = {m["name"]: m["resources"] for m in app["args"]["ensemble"]["members"]}
    assert served["a"] == {"num_gpus": 1, member_resource("a"): 1}
    assert declared(group(cluster, "member-a")) == {"CPU": 1.0, "GPU": 1.0, member_resource("a"): 1}


def test_an_autoscaled_pool_spans_its_range_with_kuberays_autoscaler_on():
    scaled = {"min_replicas": 2, "max_replicas": 5, "target_sessions": 8}
    raw = {"members": [member("a", 0.5), member("b", 0.5, autoscaling=scaled)]}
    cluster, sizes, _ = rendered(raw)
    assert sizes == {"router": (1, 1, 1), "member-a": (1, 1, 1), "member-b": (2, 2, 5)}
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"] == {"idleTimeoutSeconds": IDLE_TIMEOUT_S, "upscalingMode": "Default"}


def test_auto_pools_split_member_replicas_by_expected_load():
    raw = {"member_replicas": 6, "members": [member("a", 0.8, replicas="auto"), member("b", 0.2, replicas="auto")]}
    _, sizes, _ = rendered(raw)
    assert sizes == {"router": (1, 1, 1), "member-a": (4, 4, 4), "member-b": (2, 2, 2)}
    _, sizes, _ = rendered({**raw, "method": "ce"})  # every member computes every token
    assert sizes == {"router": (1, 1, 1), "member-a": (3, 3, 3), "member-b": (3, 3, 3)}


def test_router_replicas_are_serves_num_replicas_one_per_router_pod():
    raw = {"router": {"replicas": 3}, "members": [member("a", 1.0)]}
    cluster, sizes, app = rendered(raw)
    assert Ingress.name == INGRESS_DEPLOYMENT  # the deployment the override names is the app's
    assert app["deployments"] == [{"name": INGRESS_DEPLOYMENT, "num_replicas": 3}]
    assert sizes["router"] == (3, 3, 3) and "enableInTreeAutoscaling" not in cluster
    # One replica per router pod, none on the head: each replica's gRPC port 9000 is its own pod's.
    assert app["args"]["ingress_resources"] == {INGRESS_RESOURCE: 1}
    assert declared(group(cluster, "router")) == {"CPU": 0.0, "GPU": 0.0, INGRESS_RESOURCE: 1}
    head = cluster["headGroupSpec"]["rayStartParams"]
    assert INGRESS_RESOURCE not in head.get("resources", "")  # no router replica on the head
    # the pools' keeper is the head's, where the autoscaler never removes it
    assert POOLS_RESOURCE in head["resources"] and app["args"]["pools_resources"] == {POOLS_RESOURCE: 1}


def test_router_autoscaling_is_serves_autoscaling_config():
    scaled = {"min_replicas": 2, "max_replicas": 6, "target_ongoing_requests": 24, "upscale_delay_s": 10,
              "downscale_delay_s": 120}
    cluster, sizes, app = rendered({"router": {"autoscaling": scaled}, "members": [member("a", 1.0)]})
    assert app["deployments"] == [{"name": INGRESS_DEPLOYMENT, "autoscaling_config": scaled}]
    assert sizes["router"] == (2, 2, 6)
    assert cluster["enableInTreeAutoscaling"] is True


def test_grpc_reaches_every_ready_router_pod_on_its_port():
    service = grpc_service()
    assert kubernetes_problems(service) == []
    cluster, _, app = rendered({"router": {"replicas": 2}, "members": [member("a", 1.0)]})
    router = group(cluster, "router")
    selector = service["spec"]["selector"].items()
    selected = [g["groupName"] for g in cluster["workerGroupSpecs"]
                if selector <= g["template"].get("metadata", {}).get("labels", {}).items()]
    assert selected == ["router"] and "metadata" not in cluster["headGroupSpec"]["template"]
    (port,) = service["spec"]["ports"]
    (container,) = router["template"]["spec"]["containers"]
    grpc = {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"]
    assert port["targetPort"] == grpc == app["args"]["grpc_port"]
    assert app["args"]["grpc_host"] == "0.0.0.0"
    # A pod whose replica does not answer gRPC health yet takes no gRPC connections.
    assert container["readinessProbe"]["grpc"] == {"port": grpc}


def test_members_sharing_a_gpu_share_pods_only_with_pools_of_their_size():
    half = {"num_gpus": 0.5}
    raw = {"members": [member("a", 0.25, replicas=2, resources=half), member("b", 0.25, resources=half),
                       member("c", 0.25, replicas=2, resources=half), member("d", 0.25, resources=half)]}
    cluster, sizes, _ = rendered(raw)
    assert sizes == {"router": (1, 1, 1), "members-a-c": (2, 2, 2), "members-b-d": (1, 1, 1)}
    # Each of the 2 pods holds one replica of a and one of c, on one GPU.
    assert declared(group(cluster, "members-a-c")) == {"CPU": 2.0, "GPU": 1.0, member_resource("a"): 1,
                                                       member_resource("c"): 1}


def test_a_member_sharing_a_gpu_cannot_autoscale(tmp_path, capsys):
    scaled = {"min_replicas": 1, "max_replicas": 3, "target_sessions": 8}
    raw = {"members": [member("a", 0.5, resources={"num_gpus": 0.5}, autoscaling=scaled), member("b", 0.5)]}
    with pytest.raises(ConfigError, match="member a: num_gpus 0.5 shares a GPU"):
        render(raw, IMAGE)
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit) as exit_:
        main(["k8s", "render", "--config", str(path)])
    assert exit_.value.code == 2
    assert "cannot autoscale on Kubernetes" in capsys.readouterr().err

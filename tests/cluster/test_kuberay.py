"""k8s manifests validate offline: the RayService CRD schema (KubeRay's), Kubernetes' own schemas for
the pod templates and the gRPC Service, and Ray Serve's schema for serveConfigV2. The committed
manifest is the render. How the render scales (pools, router replicas): tests/cluster/test_kuberay_groups.py."""
import copy

import pytest
import yaml

from mixserve.cluster.kuberay import manifests, member_resource, render, to_yaml
from mixserve.cluster.placement import actor_options
from mixserve.config import parse_config
from tests.cluster.k8s_schema import ROOT, declared, kubernetes_problems, problems

IMAGE = "ghcr.io/example/mixserve:0.1.0"  # the image the committed manifest names (see k8s/README.md)


def default_raw():
    return yaml.safe_load((ROOT / "cluster" / "default.yaml").read_text())


@pytest.mark.parametrize("config, committed", [("cluster/default.yaml", "k8s/rayservice.yaml"),
                                               ("k8s/scaled.yaml", "k8s/rayservice-scaled.yaml")])
def test_committed_manifests_are_the_renders_of_their_configs_and_valid(config, committed):
    text = (ROOT / committed).read_text()
    raw = yaml.safe_load((ROOT / config).read_text())
    assert text == to_yaml(manifests(raw, IMAGE)), "re-run: mixserve k8s render (see docs/deploy.md, Kubernetes)"
    rayservice, grpc = yaml.safe_load_all(text)
    assert problems(rayservice) == []
    assert kubernetes_problems(grpc) == []


def test_the_default_render_runs_everything_once_as_on_a_laptop():
    cluster = render(default_raw(), IMAGE)["spec"]["rayClusterConfig"]
    assert "enableInTreeAutoscaling" not in cluster
    assert [(g["groupName"], g["replicas"], g["minReplicas"], g["maxReplicas"]) for g in cluster["workerGroupSpecs"]] \
        == [("router", 1, 1, 1), ("member-smollm2", 1, 1, 1), ("member-gemma3", 1, 1, 1)]


def test_each_member_gets_its_own_worker_group_and_gpu(tiny_dir):
    raw = {"members": [{"name": "a", "model": "a", "resources": {"num_gpus": 1}}, {"name": "b", "model": "b"}]}
    manifest = render(raw, IMAGE)
    assert problems(manifest) == []
    groups = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][1:]  # after the router's
    assert [g["groupName"] for g in groups] == ["member-a", "member-b"]
    assert groups[0]["rayStartParams"]["num-gpus"] == "1"
    assert groups[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert member_resource("a") in groups[0]["rayStartParams"]["resources"]
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    # Every pod's Ray returns ce's whole distributions inline, as the embedded local Ray does.
    for group in [head, *groups]:
        env = {e["name"]: e["value"] for e in group["template"]["spec"]["containers"][0]["env"]}
        assert int(env["RAY_max_direct_call_object_size"]) >= 4 * 262_144  # Gemma-3's vocabulary in float32
    # The embedded config pins each member to its group, and is a valid config itself.
    served = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"][0]["args"]["ensemble"]
    config = parse_config(served, tiny_dir)
    assert config.members[0].resources == {"num_gpus": 1, member_resource("a"): 1}


def test_members_with_fractions_of_a_gpu_share_pods_with_whole_gpus():
    # Kubernetes gives a pod whole GPUs; int(0.5) used to give these pods none, and the members never placed.
    gpus = {"a": 0.5, "b": 0.5, "c": 0.75, "d": 1, "e": 2, "f": 0.25}
    raw = {"members": [{"name": m, "model": m, "resources": {"num_gpus": g}} for m, g in gpus.items()]}
    manifest = render(raw, IMAGE)
    assert problems(manifest) == []
    groups = {g["groupName"]: g for g in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][1:]}
    assert list(groups) == ["members-a-b", "members-c-f", "member-d", "member-e"]
    pod_gpus = {name: g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
                for name, g in groups.items()}
    assert pod_gpus == {"members-a-b": "1", "members-c-f": "1", "member-d": "1", "member-e": "2"}
    assert {name: g["rayStartParams"]["num-gpus"] for name, g in groups.items()} == pod_gpus
    # Each member's own resource is declared by exactly one node, and that node has room for every
    # member it hosts at once (the members ask for what the served config pins them with).
    served = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"][0]["args"]["ensemble"]
    members = parse_config(served, resolve_models=False).members
    for name, group in groups.items():
        node = declared(group)
        hosted = [m for m in members if node.get(member_resource(m.name))]
        assert [m.name for m in hosted] == name.split("-")[1:]
        demand = {"CPU": 0.0, "GPU": 0.0}
        for m in hosted:
            options = actor_options(m)
            demand["CPU"] += options["num_cpus"]
            demand["GPU"] += options["num_gpus"]
            for key, value in options["resources"].items():
                assert node.get(key, 0) >= value, f"{m.name} asks for {key} that {name} lacks"
        assert demand["GPU"] <= node["GPU"] and demand["CPU"] <= node["CPU"], (name, demand, node)


def test_a_member_with_half_a_gpu_alone_gets_a_whole_one():
    manifest = render({"members": [{"name": "a", "model": "a", "resources": {"num_gpus": 0.5}}]}, IMAGE)
    assert problems(manifest) == []
    (_, group) = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert group["groupName"] == "member-a"
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert declared(group) == {"CPU": 1.0, "GPU": 1.0, member_resource("a"): 1}


@pytest.mark.parametrize("breakage", ["no groupName", "replicas as text", "bad container"])
def test_a_broken_manifest_fails_validation(breakage):
    manifest = copy.deepcopy(render(default_raw(), IMAGE))
    group = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]
    if breakage == "no groupName":
        del group["groupName"]
    elif breakage == "replicas as text":
        group["replicas"] = "one"
    else:
        group["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": "http"}]
    assert problems(manifest) != []

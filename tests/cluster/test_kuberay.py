"""k8s manifests validate offline: the RayService CRD schema (KubeRay's), Kubernetes' own schemas for
the pod templates, and Ray Serve's schema for serveConfigV2. The committed manifest is the render."""
import copy
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from mixserve.cluster.kuberay import member_resource, render, to_yaml
from mixserve.cluster.placement import actor_options
from mixserve.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "k8s" / "crds" / "ray.io_rayservices.yaml"  # vendored: k8s/crds/README.md
IMAGE = "ghcr.io/example/mixserve:0.1.0"  # the image the committed manifest names (see k8s/README.md)


@pytest.fixture(scope="module")
def crd_validator():
    crd = yaml.safe_load(CRD.read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    return jsonschema.Draft7Validator(schema)


def problems(manifest, crd_validator) -> list[str]:
    found = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in crd_validator.iter_errors(manifest)]
    cluster = manifest["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "m"}, "template": group["template"]}
        try:
            kubernetes_validate.validate(pod, kubernetes_validate.utils.latest_version(), strict=True)
        except kubernetes_validate.ValidationError as e:
            found.append(f"pod template: {e.message}")
    ServeDeploySchema.model_validate(yaml.safe_load(manifest["spec"]["serveConfigV2"]))
    return found


def default_raw():
    return yaml.safe_load((ROOT / "cluster" / "default.yaml").read_text())


def test_committed_manifest_is_the_render_of_the_default_config_and_valid(crd_validator):
    committed = (ROOT / "k8s" / "rayservice.yaml").read_text()
    assert committed == to_yaml(render(default_raw(), IMAGE)), "re-run: mixserve k8s render (see k8s/README.md)"
    assert problems(yaml.safe_load(committed), crd_validator) == []


def test_each_member_gets_its_own_worker_group_and_gpu(crd_validator, tiny_dir):
    raw = {"members": [{"name": "a", "model": "a", "resources": {"num_gpus": 1}}, {"name": "b", "model": "b"}]}
    manifest = render(raw, IMAGE)
    assert problems(manifest, crd_validator) == []
    groups = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
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


def declared(group) -> dict[str, float]:
    """What the group's Ray node declares, as `ray start` reads its parameters."""
    params = group["rayStartParams"]
    custom = json.loads(params["resources"][1:-1].replace('\\"', '"'))  # the shell-quoted JSON
    return {"CPU": float(params["num-cpus"]), "GPU": float(params.get("num-gpus", 0)), **custom}


def test_members_with_fractions_of_a_gpu_share_pods_with_whole_gpus(crd_validator):
    # Kubernetes gives a pod whole GPUs; int(0.5) used to give these pods none, and the members never placed.
    gpus = {"a": 0.5, "b": 0.5, "c": 0.75, "d": 1, "e": 2, "f": 0.25}
    raw = {"members": [{"name": m, "model": m, "resources": {"num_gpus": g}} for m, g in gpus.items()]}
    manifest = render(raw, IMAGE)
    assert problems(manifest, crd_validator) == []
    groups = {g["groupName"]: g for g in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
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


def test_a_member_with_half_a_gpu_alone_gets_a_whole_one(crd_validator):
    manifest = render({"members": [{"name": "a", "model": "a", "resources": {"num_gpus": 0.5}}]}, IMAGE)
    assert problems(manifest, crd_validator) == []
    (group,) = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert group["groupName"] == "member-a"
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert declared(group) == {"CPU": 1.0, "GPU": 1.0, member_resource("a"): 1}


@pytest.mark.parametrize("breakage", ["no groupName", "replicas as text", "bad container"])
def test_a_broken_manifest_fails_validation(crd_validator, breakage):
    manifest = copy.deepcopy(render(default_raw(), IMAGE))
    group = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    if breakage == "no groupName":
        del group["groupName"]
    elif breakage == "replicas as text":
        group["replicas"] = "one"
    else:
        group["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": "http"}]
    assert problems(manifest, crd_validator) != []

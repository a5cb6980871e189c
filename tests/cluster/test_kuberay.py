"""k8s manifests validate offline: the RayService CRD schema (KubeRay's), Kubernetes' own schemas for
the pod templates, and Ray Serve's schema for serveConfigV2. The committed manifest is the render."""
import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from mixserve.cluster.kuberay import member_resource, render, to_yaml
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

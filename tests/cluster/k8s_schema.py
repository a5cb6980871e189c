"""Offline validation of the KubeRay render (tests/cluster/test_kuberay*.py): the RayService CRD's
schema (KubeRay's, vendored: k8s/crds/README.md), Kubernetes' own for the pod templates and other
objects, and Ray Serve's for serveConfigV2."""
import functools
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "k8s" / "crds" / "ray.io_rayservices.yaml"


@functools.cache
def crd_validator() -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(CRD.read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    return jsonschema.Draft7Validator(schema)


def kubernetes_problems(obj: dict) -> list[str]:
    try:
        kubernetes_validate.validate(obj, kubernetes_validate.utils.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{obj['kind']}: {e.message}"]
    return []


def problems(manifest: dict) -> list[str]:
    """What is wrong with a RayService, as its CRD, Kubernetes' pod schema and Serve's config see it."""
    found = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in crd_validator().iter_errors(manifest)]
    cluster = manifest["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        found += kubernetes_problems({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "m"},
                                      "template": group["template"]})
    ServeDeploySchema.model_validate(yaml.safe_load(manifest["spec"]["serveConfigV2"]))
    return found


def declared(group: dict) -> dict[str, float]:
    """What a worker group's Ray node declares, as `ray start` reads its parameters."""
    params = group["rayStartParams"]
    custom = json.loads(params["resources"][1:-1].replace('\\"', '"'))  # the shell-quoted JSON
    return {"CPU": float(params["num-cpus"]), "GPU": float(params.get("num-gpus", 0)), **custom}

"""`mixserve soak --topology`: which copies of the ensemble the soak serves.

`single` serves the config as written (by default one router replica, one replica per member: a
laptop's shape). `scaled` serves it with two router replicas and two replicas of every member, the
smallest shape in which every part can die while another copy serves (docs/deploy.md, "Scaling out"):
the config's own scaling keys give way to these.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from mixserve.config import EnsembleConfig, load_config, parse_config

TOPOLOGIES = ("single", "scaled")
SCALED_REPLICAS = 2


def scaled(raw: dict) -> dict:
    """The config with `router: {replicas: 2}` and `replicas: 2` on each member, each replica asking for
    its share of the member's CPUs (the soak's machine is the same: twice the copies must still fit)."""
    members = [{**{k: v for k, v in m.items() if k != "autoscaling"}, "replicas": SCALED_REPLICAS,
                "resources": _shared(m.get("resources") or {})} for m in raw["members"]]
    # member_replicas is refused without members of `replicas: auto`, and none is left
    top = {k: v for k, v in raw.items() if k != "member_replicas"}
    return {**top, "router": {"replicas": SCALED_REPLICAS}, "members": members}


def _shared(resources: dict) -> dict:
    if "num_cpus" not in resources:
        return resources
    return {**resources, "num_cpus": resources["num_cpus"] / SCALED_REPLICAS}


def served_config(path: str | Path, topology: str) -> EnsembleConfig:
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {', '.join(TOPOLOGIES)} (got {topology!r})")
    config = load_config(path)  # the file as written must be valid first: its errors name its own keys
    if topology == "single":
        return config
    return parse_config(scaled(yaml.safe_load(Path(path).read_text())), base_dir=Path(path).parent)

"""`mixserve models sim`: an ensemble of simulated members (engine sim, actors/sim_engine.py), no files
to make: a and b with weights 0.8 / 0.2, each step 20 ms + 0.5 ms per session in the batch, as the
scale bench and the tests run them (docs/configuration.md, "Engines")."""
from __future__ import annotations

from pathlib import Path

import yaml

SIM = {"step_ms": 20, "per_seq_ms": 0.5}
# A sim member sleeps through its steps: a tenth of a CPU is more than it uses, so that tens of replicas
# fit on a 2-core machine's Ray.
MEMBER = {"engine": "sim", "max_batch": 32, "resources": {"num_cpus": 0.1}}


def sim_config(weights: dict[str, float] | None = None, **top) -> dict:
    """The config as a mapping: members a and b (or `weights`' names), method me; `top` adds or
    replaces top-level keys (method, router, member_replicas, ...)."""
    weights = weights or {"a": 0.8, "b": 0.2}
    members = [{"name": name, "weight": weight, **MEMBER, "sim": dict(SIM)} for name, weight in weights.items()]
    return {"members": members, "method": "me", **top}


def make_sim(out: str | Path, **top) -> Path:
    """Write sim.yaml into `out`; its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sim.yaml"
    path.write_text(yaml.safe_dump(sim_config(**top), sort_keys=False))
    return path

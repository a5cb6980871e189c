"""Where a member runs: its config's resources as Ray actor options.

`resources` takes num_cpus, num_gpus and any custom node resource ({member_a: 1} lands the member on
the node that declares member_a). On CPU a member defaults to one CPU and one torch thread: the
simulated "one accelerator per member" of docs/architecture.md ("Environment facts").
"""
from __future__ import annotations

from mixserve.engines import ENGINES
from mixserve.config import MemberConfig


def actor_options(member: MemberConfig) -> dict:
    res = dict(member.resources)
    num_gpus = res.pop("num_gpus", 0)
    if ENGINES[member.engine].spans_devices and member.devices > 1:
        num_gpus = 0  # the engine places the member's workers itself, one GPU each
    num_cpus = res.pop("num_cpus", 0 if num_gpus else 1)
    return {"num_cpus": num_cpus, "num_gpus": num_gpus, "resources": res}


def torch_threads(member: MemberConfig) -> int:
    return max(1, int(member.resources.get("num_cpus", 1)))


def member_args(member: MemberConfig) -> dict:
    """The arguments every engine's member is built with (an actor, or a core in the router's
    process), then its engine's own (mixserve/engines.py). An actor takes max_batch besides."""
    return dict(name=member.name, source=member.source, dtype=member.dtype, threads=torch_threads(member),
                max_sessions=member.max_sessions, **ENGINES[member.engine].args(member))


def check_fits(members, capacity: dict[str, float]) -> None:
    """Fail at once when the members' total demand exceeds what a fixed cluster has: on an embedded
    local Ray nothing can scale up, so waiting for placement would only end in a timeout."""
    demand: dict[str, float] = {}
    for m in members:
        opts = actor_options(m)
        for key, value in {"CPU": opts["num_cpus"], "GPU": opts["num_gpus"], **opts["resources"]}.items():
            demand[key] = demand.get(key, 0) + value
    short = {k: (v, capacity.get(k, 0)) for k, v in demand.items() if v > capacity.get(k, 0) + 1e-9}
    if short:
        detail = ", ".join(f"{k}: members need {need:g}, the cluster has {have:g}" for k, (need, have) in short.items())
        raise RuntimeError(f"the members do not fit on this Ray cluster ({detail}); lower `resources` per member "
                           f"in the config (e.g. num_cpus: 0.5) or join a larger cluster with --address")

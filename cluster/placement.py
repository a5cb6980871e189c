"""Where a member runs: its config's resources as Ray actor options.

`resources` takes num_cpus, num_gpus and any custom node resource ({member_a: 1} lands the member on
the node that declares member_a). On CPU a member defaults to one CPU and one torch thread: the
simulated "one accelerator per member" of docs/architecture.md ("Environment facts").
"""
from __future__ import annotations

from mixserve.config import MemberConfig


def actor_options(member: MemberConfig) -> dict:
    res = dict(member.resources)
    num_gpus = res.pop("num_gpus", 0)
    if member.engine == "vllm" and member.devices > 1:
        # vLLM's Ray executor places the member's tensor/pipeline-parallel workers itself, one GPU
        # each; the member actor that drives them holds none.
        num_gpus = 0
    num_cpus = res.pop("num_cpus", 0 if num_gpus else 1)
    return {"num_cpus": num_cpus, "num_gpus": num_gpus, "resources": res}


def torch_threads(member: MemberConfig) -> int:
    return max(1, int(member.resources.get("num_cpus", 1)))


def member_args(member: MemberConfig) -> dict:
    """The engine's constructor arguments: MemberCore's (an actor or an in-process core alike) or
    VllmEngine's."""
    args = dict(name=member.name, source=member.source, dtype=member.dtype, threads=torch_threads(member),
                max_sessions=member.max_sessions)
    if member.engine == "vllm":
        options = dict(member.engine_options)
        if member.devices > 1:
            options.setdefault("distributed_executor_backend", "ray")
        return dict(args, max_batch=member.max_batch, options=options)
    return dict(args, max_cached_tokens=member.max_cached_tokens, batch_invariant=member.batch_invariant)


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

"""Which members share a process (docs/architecture.md, "Co-located experts"): part of the config's checks.

With `colocate: true`, the members of one engine that name one base model, with an adapter or without,
run as one group: each replica of the group is one actor (actors/group.py's GroupHost) holding the base
once, every member's adapter beside it and every member's own sessions (on vLLM: one vLLM engine, each
member's adapter a LoRA request; actors/vllm_stepper.py). A group is sized, placed and
replaced as one pool (cluster/pools.py); the routers still see one pool per member, whose replicas are
the group's, each reached through a view that names the member (actors/group.py's MemberView).
"""
from __future__ import annotations

import dataclasses

# What one process decides for all its members: they must say the same (engine_options: on vLLM, one engine's)
SHARED = ("resources", "replicas", "autoscaling", "max_batch", "batch_invariant", "engine_options")
GROUPED = ("transformers", "vllm")  # the engines whose members of one base can share a process


class GroupError(ValueError):
    pass


def units(members, colocate: bool) -> dict[str, tuple]:
    """The processes' kinds, by name: a member alone under its own name, a group under its members'
    names joined by "+" ("base+sums+clock"), in the config's order. `members`: MemberConfigs."""
    if not colocate:
        return {m.name: (m,) for m in members}
    by_base: dict[tuple, list] = {}
    for m in members:
        key = (m.name,) if m.engine not in GROUPED else (m.engine, dataclasses.replace(m.source, adapter=None), m.dtype)
        by_base.setdefault(key, []).append(m)
    return {"+".join(m.name for m in group): tuple(group) for group in by_base.values()}


def check(members, colocate: bool) -> None:
    """A group's members agree on what its one process decides (SHARED)."""
    for group in units(members, colocate).values():
        first = group[0]
        for m in group[1:]:
            if differ := [key for key in SHARED if getattr(m, key) != getattr(first, key)]:
                raise GroupError(f"colocate: members {first.name!r} and {m.name!r} share one process (one base), "
                                 f"so they must set the same {', '.join(differ)}")

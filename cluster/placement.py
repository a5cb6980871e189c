"""Where a member runs: its config's resources as Ray actor options.

`resources` takes num_cpus, num_gpus and any custom node resource ({member_a: 1} lands the member on
the node that declares member_a). On CPU a member defaults to one CPU and one torch thread: the
simulated "one accelerator per member" of DESIGN.md.
"""
from __future__ import annotations

from mixserve.config import MemberConfig


def actor_options(member: MemberConfig) -> dict:
    res = dict(member.resources)
    num_gpus = res.pop("num_gpus", 0)
    num_cpus = res.pop("num_cpus", 0 if num_gpus else 1)
    return {"num_cpus": num_cpus, "num_gpus": num_gpus, "resources": res}


def torch_threads(member: MemberConfig) -> int:
    return max(1, int(member.resources.get("num_cpus", 1)))

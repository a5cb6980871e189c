"""Autoscaling of member pools (docs/deploy.md, "Scaling out"), the shape of Ray Serve's default policy
(a target load per replica, a delay before scaling up and a longer one before scaling down) on the load
Serve cannot see: a member's work arrives on its data plane, not through Serve's handles, and it is
the sessions computing on it (`busy` in its stats), not the requests. Under ME a member with weight λᵢ
computes a share λᵢ of the steps, so its pool's busy sessions, and its size, follow λᵢ.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque

WINDOW_S = 10.0  # the busy sessions the decisions read: a mean over this window, samples each WATCH_S


def desired(busy: float, target: float, lo: int, hi: int) -> int:
    """Replicas for a pool computing `busy` sessions at once at `target` per replica."""
    return max(lo, min(hi, math.ceil(busy / target - 1e-9)))


class Autoscaler:
    def __init__(self, keeper):
        """`keeper`: cluster/pools.py's PoolKeeper, whose pools this sizes (`pools`, `sizes`, `resize`)."""
        self.keeper = keeper
        # by pool: a member's, or a co-located group's (mixserve/groups.py), autoscaled as its first member says
        self.samples: dict[str, deque] = {unit: deque() for unit, m in keeper.members.items() if m.autoscaling}
        # member -> (whether it wants more replicas or fewer, since when): a climbing load asks for a new
        # size every tick, and the delay is the direction's, as Ray Serve's, not one size's
        self.since: dict[str, tuple[bool, float]] = {}
        self.history: list[tuple[float, dict[str, int]]] = []  # (time, sizes) at each change (the bench)

    async def tick(self) -> None:
        now = time.monotonic()
        for member, samples in self.samples.items():
            busy = await self._busy(member)
            if busy is None:
                continue
            samples.append((now, busy))
            while samples and samples[0][0] < now - WINDOW_S:
                samples.popleft()
            policy = self.keeper.members[member].autoscaling
            mean = sum(b for _, b in samples) / len(samples)
            want = desired(mean, policy.target, policy.min_replicas, policy.max_replicas)
            have = self.keeper.sizes()[member]
            if want == have:
                self.since.pop(member, None)
                continue
            if self.since.get(member, (None,))[0] != (want > have):
                self.since[member] = (want > have, now)
            delay = policy.upscale_delay_s if want > have else policy.downscale_delay_s
            if now - self.since[member][1] >= delay:
                await self.keeper.resize(member, want)
                self.since.pop(member, None)
                self.history.append((time.time(), self.keeper.sizes()))

    async def _busy(self, member: str) -> int | None:
        """The pool's busy sessions now; None when no replica answered (no decision on no data)."""
        replicas = [r for r in self.keeper.pools[member].values() if not r.draining]
        stats = await asyncio.gather(*(asyncio.wait_for(r.actor.stats.remote(), 2.0) for r in replicas),
                                     return_exceptions=True)
        counts = [s["busy"] for s in stats if isinstance(s, dict)]
        return sum(counts) if counts else None

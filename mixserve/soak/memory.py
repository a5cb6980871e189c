"""`mixserve soak`'s memory watch: resident memory of each process, and of each role, over the soak.

Two questions, both bounded at 10% by the soak:
- does a process leak? A member killed in the soak comes back as a new process, and comparing a fresh
  process with the one that died says nothing about a leak; so each process is measured against itself,
  from the end of its own warm-up (as long as the soak's warm-up: a restarted member has to serve the
  same mix as long as the first one did before its size says anything) to its end;
- does the service grow? Each role (the router replicas, each member replica) at the end of the soak,
  after the drain, against the same role once warm-up was over, whatever processes came and went
  between; a role served by several processes at once (two router replicas) is their sum.
Every sample is kept, for the plot: a leak climbs, a warm-up levels off.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import psutil

from .faults import pids


@dataclass
class Life:
    name: str
    pid: int
    seen: float  # soak seconds when first seen alive
    warm_at: float  # soak seconds from which its size counts
    samples: list[tuple[float, int]] = field(default_factory=list)  # (soak seconds, bytes)

    def counted(self) -> list[tuple[float, int]]:
        return [s for s in self.samples if s[0] >= self.warm_at]


class MemoryWatch:
    def __init__(self, clock, warmup_s: float, members: list[str], every_s: float = 2.0):
        self.clock = clock
        self.members = members
        self.warmup_s = warmup_s
        self.every_s = every_s
        self.lives: dict[int, Life] = {}
        self.started: float | None = None  # the first sample: processes alive then are warm already

    async def run(self, until: float) -> None:
        while self.clock() < until:
            self.sample()
            await asyncio.sleep(self.every_s)
        self.sample()

    def sample(self) -> None:
        now = self.clock()
        first = self.started is None
        self.started = now if first else self.started
        for pid, name in pids(self.members).items():
            try:
                rss = psutil.Process(pid).memory_info().rss
            except psutil.NoSuchProcess:
                continue
            if not rss:
                continue  # killed and not yet reaped: a zombie holds no memory and says nothing
            life = self.lives.get(pid) or self.lives.setdefault(
                pid, Life(name, pid, now, now if first else now + self.warmup_s))
            life.samples.append((round(now, 1), rss))

    def growth(self, min_span_s: float = 30.0) -> list[dict]:
        """Every process that served at least min_span_s after its warm-up: its growth over that time."""
        rows = []
        for x in self.lives.values():
            counted = x.counted()
            if counted and counted[-1][0] - counted[0][0] >= min_span_s:
                (t0, base), (t1, last) = counted[0], counted[-1]
                rows.append({"name": x.name, "pid": x.pid, "settled_bytes": base, "last_bytes": last,
                             "span_s": round(t1 - t0, 1), "growth": round(last / base - 1, 4)})
        return rows

    def roles(self) -> list[dict]:
        """Each role's size after the soak against its size once warm-up was over: the sum over its
        processes sampled at its first sample and at its last."""
        rows = []
        for name in sorted({x.name for x in self.lives.values()}):
            lives = [x for x in self.lives.values() if x.name == name and x.samples]
            if not any(x.seen == self.started for x in lives):
                continue  # not alive when the soak began: nothing warm to compare with
            end = max(x.samples[-1][0] for x in lives)
            base = sum(x.samples[0][1] for x in lives if x.seen == self.started)
            last = sum(x.samples[-1][1] for x in lives if x.samples[-1][0] == end)
            rows.append({"name": name, "warm_bytes": base, "end_bytes": last, "processes": len(lives),
                         "growth": round(last / base - 1, 4)})
        return rows

    def series(self) -> list[dict]:
        return [{"name": x.name, "pid": x.pid, "warm_at": round(x.warm_at, 1), "samples": x.samples}
                for x in self.lives.values()]

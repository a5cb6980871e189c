"""`mixserve soak`'s memory watch: each process's resident memory over its own life.

A member killed in the soak comes back as a new process, and comparing a fresh process with the one
that died says nothing about a leak; so each process (router replica, member) is measured against
itself: its size once it has served for `settle_s`, against its size at the end of the soak.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import psutil

from .soak_faults import pids


@dataclass
class Life:
    name: str
    pid: int
    seen: float  # soak seconds when first seen alive
    base: int = 0  # bytes, once settled
    base_at: float = 0.0
    last: int = 0
    last_at: float = 0.0


class MemoryWatch:
    def __init__(self, clock, settle_s: float = 10.0, every_s: float = 2.0):
        self.clock = clock
        self.settle_s = settle_s
        self.every_s = every_s
        self.lives: dict[int, Life] = {}

    async def run(self, until: float) -> None:
        while self.clock() < until:
            self.sample()
            await asyncio.sleep(self.every_s)
        self.sample()

    def sample(self) -> None:
        now = self.clock()
        for name, pid in pids().items():
            try:
                rss = psutil.Process(pid).memory_info().rss
            except psutil.NoSuchProcess:
                continue
            if not rss:
                continue  # killed and not yet reaped: a zombie holds no memory and says nothing
            life = self.lives.setdefault(pid, Life(name, pid, now))
            if not life.base and now - life.seen >= self.settle_s:
                life.base, life.base_at = rss, now
            life.last, life.last_at = rss, now

    def growth(self, min_span_s: float = 30.0) -> list[dict]:
        """Every process that served at least min_span_s after settling: its growth over that time."""
        return [{"name": x.name, "pid": x.pid, "settled_bytes": x.base, "last_bytes": x.last,
                 "span_s": round(x.last_at - x.base_at, 1), "growth": round(x.last / x.base - 1, 4)}
                for x in self.lives.values() if x.base and x.last_at - x.base_at >= min_span_s]

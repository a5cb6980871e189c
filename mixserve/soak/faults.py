"""`mixserve soak`'s faults: real signals to the real processes of a served ensemble on this machine.

A member is SIGKILLed (Ray restarts it), paused (SIGSTOP, then SIGCONT: alive but silent), or the
router replica is SIGKILLed (Serve restarts it, and with it the members it owns). Each fault is a
window [start, end] in soak seconds, `end` being when the thing answered again: the oracle explains
errors by these windows. Processes are found through Ray's GCS by the members' actor names
(mixserve/serving/ensemble.py `actor_name`) and Serve's replica class name.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
from dataclasses import dataclass

import aiohttp

from mixserve.serving.ensemble import MEMBER_PREFIX

REPLICA_CLASS = "ServeReplica:mixserve:Ingress"


@dataclass
class Fault:
    kind: str  # member_kill | pause | router_kill
    target: str  # a member's name, or "router"
    start: float
    end: float | None = None  # None: it never came back within the bound
    pid: int = 0


def _actors() -> list[dict]:
    from ray._private import state  # the GCS's actor table; Ray's state API needs the dashboard

    return list(state.actors().values())


def members() -> dict[str, dict]:
    """Member name -> its live actor's record (ActorID, Pid, NumRestarts)."""
    alive = {}
    for a in _actors():
        if a["Name"].startswith(MEMBER_PREFIX) and a["State"] == "ALIVE":
            alive[a["Name"][len(MEMBER_PREFIX):].rsplit(":", 1)[0]] = a
    return alive


def router_pid() -> int | None:
    pids = [a["Pid"] for a in _actors() if a["ActorClassName"] == REPLICA_CLASS and a["State"] == "ALIVE"]
    return pids[0] if pids else None


def pids() -> dict[str, int]:
    """The processes whose memory the soak watches: the router replica and each member."""
    found = {name: a["Pid"] for name, a in members().items()}
    if (pid := router_pid()) is not None:
        found["router"] = pid
    return found


class Injector:
    """Runs one kind of fault on its own timeline, drawn from a seed: `count` faults spread over
    [first, last] soak seconds, each at a jittered slot. Faults of different kinds overlap."""

    def __init__(self, clock, seed: int, http: str, bound_s: float):
        self.clock = clock
        self.rng = random.Random(seed)
        self.http = http
        self.bound_s = bound_s  # how long a killed thing may take to come back before the soak gives up on it
        self.faults: list[Fault] = []

    def times(self, count: int, first: float, last: float) -> list[float]:
        if count <= 0:
            return []
        slot = (last - first) / count
        return [first + slot * (k + self.rng.uniform(0.1, 0.9)) for k in range(count)]

    async def run(self, kind: str, when: list[float], pause_s: tuple[float, float] = (1.0, 5.0)) -> None:
        for t in when:
            await asyncio.sleep(max(0.0, t - self.clock()))
            if kind == "member_kill":
                await self.kill_member()
            elif kind == "pause":
                await self.pause_member(self.rng.uniform(*pause_s))
            else:
                await self.kill_router()

    async def _alive(self) -> dict[str, dict]:
        """The live members; while none is (a router replica restarting them), wait for one."""
        started = self.clock()
        while not (alive := members()) and self.clock() - started < self.bound_s:
            await asyncio.sleep(0.25)
        return alive

    async def kill_member(self) -> None:
        alive = await self._alive()
        if not alive:
            return
        name = self.rng.choice(sorted(alive))
        actor = alive[name]
        fault = self._signal("member_kill", name, actor["Pid"], signal.SIGKILL)
        await self._until(fault, lambda: _restarted(actor))

    async def pause_member(self, seconds: float) -> None:
        alive = await self._alive()
        if not alive:
            return
        name = self.rng.choice(sorted(alive))
        fault = self._signal("pause", name, alive[name]["Pid"], signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)  # the pause itself: a length drawn from the seed
        finally:
            _send(fault.pid, signal.SIGCONT)
            fault.end = self.clock()

    async def kill_router(self) -> None:
        pid = router_pid()
        if pid is None:
            return
        fault = self._signal("router_kill", "router", pid, signal.SIGKILL)
        await self._until(fault, self._healthy)

    def _signal(self, kind: str, target: str, pid: int, sig) -> Fault:
        fault = Fault(kind, target, self.clock(), pid=pid)
        self.faults.append(fault)
        _send(pid, sig)
        return fault

    async def _until(self, fault: Fault, ready) -> None:
        """Poll what the fault took away until it is back, for at most bound_s."""
        while self.clock() - fault.start < self.bound_s:
            if await ready():
                fault.end = self.clock()
                return
            await asyncio.sleep(0.25)

    async def _healthy(self) -> bool:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
                async with s.get(self.http + "/health") as resp:
                    return resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False


async def _restarted(actor: dict) -> bool:
    """Ray brought the actor back: alive again in a new process. Or it is dead for good (its router
    was killed too, or it is past its restarts): nothing more to wait for."""
    for a in _actors():
        if a["ActorID"] == actor["ActorID"]:
            return a["State"] == "DEAD" or (a["State"] == "ALIVE" and a["Pid"] != actor["Pid"])
    return False


def _send(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # it died on its own meanwhile: the window still stands

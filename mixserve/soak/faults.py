"""`mixserve soak`'s faults: real signals to the real processes of a served ensemble on this machine.

A member replica is SIGKILLed (Ray, or its pool, brings it back), paused (SIGSTOP, then SIGCONT: alive
but silent), or a router replica is SIGKILLed (Serve starts another). Each fault is a window
[start, end] in soak seconds, `end` being when what it took away was whole again: the oracle explains
errors by these windows. A fault takes ONE replica of a pool, and no two faults take the same pool at
once: with two replicas of each member the service must stay up through every fault, which is what
the soak's availability measures (mixserve/soak/availability.py). Processes are found through Ray's
GCS: a member's replicas by their actor names, `mixserve_member:<member>:` then, in pools, the
replica's index, then a suffix unique per start (mixserve/serving/ensemble.py `actor_name`); the
router replicas by Serve's replica class name.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
from dataclasses import dataclass

import aiohttp

from mixserve.serving.ensemble import MEMBER_PREFIX

APP, INGRESS = "mixserve", "Ingress"
REPLICA_CLASS = f"ServeReplica:{APP}:{INGRESS}"


@dataclass
class Fault:
    kind: str  # member_kill | pause | router_kill
    target: str  # a member's name, or "router"
    start: float
    end: float | None = None  # None: it never came back within the bound
    pid: int = 0
    replica: str = ""  # the actor hit: a member replica's name, a router replica's actor id


def _actors() -> list[dict]:
    from ray._private import state  # the GCS's actor table; Ray's state API needs the dashboard

    return list(state.actors().values())


def owner(actor_name: str, members: list[str]) -> str | None:
    """The member whose pool an actor belongs to, by its name's prefix; the longest name wins (a
    member `a` and a member `a:1` both prefix `mixserve_member:a:1:...`)."""
    for m in sorted(members, key=len, reverse=True):
        if actor_name.startswith(f"{MEMBER_PREFIX}{m}:"):
            return m
    return None


def role(actor_name: str, member: str) -> str:
    """What the memory watch calls a member replica: `a:0` for replica 0 of a pool, `a` where the name
    carries no index (one copy per router)."""
    rest = actor_name[len(f"{MEMBER_PREFIX}{member}:"):]
    return f"{member}:{rest.rsplit(':', 1)[0]}" if ":" in rest else member


def pools(members: list[str], actors: list[dict] | None = None) -> dict[str, list[dict]]:
    """Member name -> the live actors of its pool (records with Name, ActorID, Pid), by name."""
    found: dict[str, list[dict]] = {}
    for a in _actors() if actors is None else actors:
        if a["State"] == "ALIVE" and (m := owner(a["Name"], members)) is not None:
            found.setdefault(m, []).append(a)
    return {m: sorted(replicas, key=lambda a: a["Name"]) for m, replicas in found.items()}


def routers(actors: list[dict] | None = None) -> list[dict]:
    """The live router (ingress) replicas, by actor id."""
    live = [a for a in (_actors() if actors is None else actors)
            if a["ActorClassName"] == REPLICA_CLASS and a["State"] == "ALIVE"]
    return sorted(live, key=lambda a: a["ActorID"])


def pick_replica(rng: random.Random, live: dict[str, list[dict]], busy: set[str]) -> tuple[str, dict] | None:
    """A member whose pool no other fault holds, then one of its replicas; None while there is none."""
    free = sorted(m for m in live if m not in busy)
    if not free:
        return None
    member = rng.choice(free)
    return member, _one(rng, live[member])


def whole(hit: dict, live: list[dict], size: int) -> bool:
    """A pool (or the routers) back to `size` live replicas, none of them the process that was hit:
    the hit actor restarted in a new process, or another started in its place."""
    return sum(a["Pid"] != hit["Pid"] for a in live) >= size


def pids(members: list[str]) -> dict[int, str]:
    """The processes whose memory the soak watches, pid -> role: each router replica, each member replica."""
    actors = _actors()
    found = {a["Pid"]: role(a["Name"], m) for m, replicas in pools(members, actors).items() for a in replicas}
    return found | {a["Pid"]: "router" for a in routers(actors)}


class Injector:
    """Runs one kind of fault on its own timeline, drawn from a seed: `count` faults spread over
    [first, last] soak seconds, each at a jittered slot. Faults of different kinds overlap, on
    different pools: `busy` (shared by the injectors) holds the members under a fault."""

    def __init__(self, clock, seed: int, http: str, bound_s: float, members: list[str], busy: set[str]):
        self.clock = clock
        self.rng = random.Random(seed)
        self.http = http
        self.bound_s = bound_s  # how long a killed thing may take to come back before the soak gives up on it
        self.members = members
        self.busy = busy
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

    async def _pick(self) -> tuple[str, dict, int] | None:
        """A replica to hit and its pool's size; while none is free (members restarting with their
        router, or every pool under a fault), wait for one."""
        started = self.clock()
        while self.clock() - started < self.bound_s:
            live = pools(self.members)
            if (picked := pick_replica(self.rng, live, self.busy)) is not None:
                self.busy.add(picked[0])
                return *picked, len(live[picked[0]])
            await asyncio.sleep(0.25)
        return None

    async def kill_member(self) -> None:
        if (picked := await self._pick()) is None:
            return
        member, actor, size = picked
        try:
            fault = self._signal("member_kill", member, actor, signal.SIGKILL)
            await self._until(fault, lambda: _pool_whole(self.members, member, actor, size))
        finally:
            self.busy.discard(member)

    async def pause_member(self, seconds: float) -> None:
        if (picked := await self._pick()) is None:
            return
        member, actor, _ = picked
        fault = self._signal("pause", member, actor, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)  # the pause itself: a length drawn from the seed
        finally:
            _send(fault.pid, signal.SIGCONT)
            fault.end = self.clock()
            self.busy.discard(member)

    async def kill_router(self) -> None:
        if not (live := routers()):
            return
        actor = _one(self.rng, live)
        fault = self._signal("router_kill", "router", actor, signal.SIGKILL)
        await self._until(fault, lambda: self._routers_whole(actor, len(live)))

    def _signal(self, kind: str, target: str, actor: dict, sig) -> Fault:
        replica = actor["Name"] or actor["ActorID"]  # Serve's replicas are found by class, not name
        fault = Fault(kind, target, self.clock(), pid=actor["Pid"], replica=replica)
        self.faults.append(fault)
        _send(fault.pid, sig)
        return fault

    async def _until(self, fault: Fault, ready) -> None:
        """Poll what the fault took away until it is back, for at most bound_s."""
        while self.clock() - fault.start < self.bound_s:
            if await ready():
                fault.end = self.clock()
                return
            await asyncio.sleep(0.25)

    async def _routers_whole(self, hit: dict, size: int) -> bool:
        """As many router replicas running as before, Serve's view and the GCS's, and the service healthy."""
        return whole(hit, routers(), size) and await asyncio.to_thread(_running) >= size and await self._healthy()

    async def _healthy(self) -> bool:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
                async with s.get(self.http + "/health") as resp:
                    return resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False


def _one(rng: random.Random, replicas: list[dict]) -> dict:
    # One copy takes no draw: the single topology's schedule stays what its seed drew before pools.
    return replicas[0] if len(replicas) == 1 else rng.choice(replicas)


async def _pool_whole(members: list[str], member: str, hit: dict, size: int) -> bool:
    return whole(hit, pools(members).get(member, []), size)


def _running() -> int:
    """Router replicas Serve reports running: a new replica's actor is alive before it serves."""
    from ray import serve

    app = serve.status().applications.get(APP)
    deployment = app and app.deployments.get(INGRESS)
    return deployment.replica_states.get("RUNNING", 0) if deployment else 0


def _send(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # it died on its own meanwhile: the window still stands

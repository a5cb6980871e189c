"""The member pools (docs/architecture.md, "Pools"): each member's replicas, started, watched, replaced and
sized by a keeper that is not a router, so that members outlive routers and routers outlive members.

The keeper is one small process per deployment: a Ray Serve deployment of the app (mixserve/serving/app.py,
whose lifetime it shares) or, outside Serve, a Ray actor of the process that built the ensemble. Each
member replica is a Ray actor it owns (actors/host.py's MemberHost), pinned by the member's resources;
Ray restarts a crashed one in place (member_restarts), and the keeper starts a new one where Ray gives up,
so a pool returns to its size. The data plane's key is the keeper's, drawn once: every router replica,
and every restart of every replica, uses the same one. Router replicas read the pools' `view` and reach
the replicas themselves (router/pools.py).
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from dataclasses import dataclass

from mixserve.actors.group import GroupHost, MemberView
from mixserve.actors.host import MemberHost
from mixserve.config import EnsembleConfig

from .autoscale import Autoscaler
from mixserve.groups import units
from .placement import actor_options, member_args
from .sizing import initial_sizes

log = logging.getLogger(__name__)
MEMBER_PREFIX = "mixserve_member:"
WATCH_S = 1.0  # how often the keeper looks at autoscaled pools' load
DRAIN_S = 60.0  # a replica leaving its pool first waits this long for its sessions to end


@dataclass
class Replica:
    id: str  # "<member>:<index>", unique in the deployment's life
    actor: object
    draining: bool = False


def actor_name(replica: str) -> str:
    """A replica's Ray name: `mixserve_member:<member>:<index>:<8 hex>`, unique per start (several
    deployments may share a cluster). How an operator, `ray list actors` or `mixserve soak` tells which
    process is which member."""
    return f"{MEMBER_PREFIX}{replica}:{uuid.uuid4().hex[:8]}"


class PoolKeeper:
    """The pools of one deployment. `view()` is what routers read: the key and each pool's replicas.

    A pool is a unit's (cluster/groups.py): a member's, or a co-located group's, whose replicas each
    host all its members and appear in every one of its members' pools in the view."""

    def __init__(self, config: EnsembleConfig, key: bytes | None = None):
        import ray

        self.config = config
        self.key = key or secrets.token_bytes(32)
        self.remote = ray.remote(max_restarts=config.member_restarts, max_task_retries=0)(MemberHost)
        self.group_remote = ray.remote(max_restarts=config.member_restarts, max_task_retries=0)(GroupHost)
        self.units = units(config.members, config.colocate)
        self.members = {unit: group[0] for unit, group in self.units.items()}  # what sizes and places each pool
        self.pools: dict[str, dict[str, Replica]] = {unit: {} for unit in self.units}
        self.started = 0  # replicas ever started: the next one's index
        self.version = 0  # bumped on every change of a pool, so that routers know to look again
        self.infos: dict = {}
        self.tasks: set[asyncio.Task] = set()
        sizes = initial_sizes(config)
        for unit, group in self.units.items():
            for _ in range(max(sizes[m.name] for m in group)):
                self._start(unit)
        self.autoscaler = Autoscaler(self)

    def _start(self, unit: str) -> Replica:
        m, group = self.members[unit], self.units[unit]
        rid = f"{unit}:{self.started}"
        self.started += 1
        options = dict(name=actor_name(rid), **actor_options(m))
        if len(group) > 1:
            actor = self.group_remote.options(**options).remote(
                m.engine, {g.name: dict(max_batch=g.max_batch, **member_args(g)) for g in group})
        else:
            actor = self.remote.options(**options).remote(m.engine, max_batch=m.max_batch, **member_args(m))
        replica = self.pools[unit][rid] = Replica(rid, actor)
        self.version += 1
        return replica

    async def ready(self) -> dict:
        """Every replica loaded: each member's info (its replicas are one model: the first to answer
        speaks for the pool), or a clear error within load_timeout_s, never a silently pending actor.
        Then the keeper starts watching its pools."""
        import ray

        config = self.config
        refs = {reach.info.remote(): name for name, _, reach in self._replicas()}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=config.load_timeout_s)
        if pending:
            late = sorted({refs[r] for r in pending})
            detail = "; ".join(f"{name} needs {actor_options(self._config_of(name))}" for name in late)
            self.shutdown()
            raise RuntimeError(
                f"members not ready after {config.load_timeout_s:.0f} s: {detail}. Either the cluster "
                f"lacks these resources (see `ray status`) or loading is slower than load_timeout_s")
        for ref in ready:
            try:
                self.infos.setdefault(refs[ref], await ref)
            except ray.exceptions.RayError as e:
                self.shutdown()
                raise RuntimeError(f"member {refs[ref]!r} failed to start: {e}") from None
        self._spawn(self._watch())
        return {m.name: self.infos[m.name] for m in config.members}

    def view(self) -> dict:
        """What a router needs to reach the pools: the data plane's key, the view's version, and per
        member its replicas as (id, actor, draining)."""
        pools = {m.name: [] for m in self.config.members}
        for name, replica, reach in self._replicas():
            pools[name].append((replica.id, reach, replica.draining))
        return {"key": self.key, "version": self.version, "infos": self.infos, "pools": pools}

    def _replicas(self):
        """(member, replica, the handle a router calls the member on) for every member of every replica:
        a group's replica once per member, through a view that names it (actors/group.py)."""
        for unit, pool in self.pools.items():
            group = self.units[unit]
            for replica in pool.values():
                for m in group:
                    yield m.name, replica, replica.actor if len(group) == 1 else MemberView(replica.actor, m.name)

    def _config_of(self, member: str):
        return next(m for m in self.config.members if m.name == member)

    def sizes(self) -> dict[str, int]:
        """Each pool's (unit's) replicas that take new sessions (not draining)."""
        return {name: sum(not r.draining for r in pool.values()) for name, pool in self.pools.items()}

    async def resize(self, unit: str, size: int) -> None:
        """Grow the unit's pool at once, or shrink it by draining: a leaving replica takes no new session
        (routers see it draining in the next view), its sessions end or move (a router replays a
        session whose replica is gone onto a sibling: invariant 1), and it stops after DRAIN_S at most."""
        active = [r for r in self.pools[unit].values() if not r.draining]
        for _ in range(size - len(active)):
            self._start(unit)
        for replica in active[size:] if size < len(active) else ():
            replica.draining = True
            self.version += 1
            self._spawn(self._drain(unit, replica))

    async def _drain(self, unit: str, replica: Replica) -> None:
        import ray

        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline:
            try:
                if (await asyncio.wait_for(replica.actor.stats.remote(), WATCH_S * 5))["busy"] == 0:
                    break
            except (asyncio.TimeoutError, ray.exceptions.RayError):
                break
            await asyncio.sleep(WATCH_S)
        self.pools[unit].pop(replica.id, None)
        self.version += 1
        ray.kill(replica.actor)

    async def _watch(self) -> None:
        """Let the autoscaler look at the pools every WATCH_S."""
        while True:
            await self.autoscaler.tick()
            await asyncio.sleep(WATCH_S)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def pids(self) -> dict[str, int]:
        """Each replica's process id (tests and the soak: a router's death must leave them)."""
        replicas = [r for pool in self.pools.values() for r in pool.values()]
        stats = await asyncio.gather(*(r.actor.stats.remote() for r in replicas))
        return {r.id: s["pid"] for r, s in zip(replicas, stats)}

    def shutdown(self) -> None:
        import ray

        for task in self.tasks:
            task.cancel()
        for pool in self.pools.values():
            for replica in pool.values():
                ray.kill(replica.actor)
            pool.clear()

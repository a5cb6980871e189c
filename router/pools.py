"""A router's reach into the member pools (cluster/pools.py; docs/architecture.md, "Pools").

Each member is a pool of replicas that a keeper starts and sizes; to the router's turn loop a pool is one
member (`PoolMember` is a MemberClient), and the pool picks the replica for each session: a new session
by rendezvous hashing on its id over the replicas that take sessions, passing over one that holds
LOAD_SLACK more of this router's sessions than the least loaded (the anchors' cache affinity with a load
threshold); a session already placed goes to its replica while it lives, so its KV cache is used. A
session whose replica is gone or leaving raises SessionLost, and the router replays its log onto the
replica it is placed on next (invariant 1). The same hash from every router replica, and the placement
a named session's snapshot keeps, send a session's later turns to the same replicas. A replica that
answers no PING (stopped, hung) gets no new session and no stateless call while a sibling answers.
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from mixserve.actors.messages import SessionLost, StepRequest, StepResult

from .clients import MemberClient, MemberDown, _Typed

log = logging.getLogger(__name__)
REFRESH_S = 2.0  # how old the router's view of the pools may grow before it reads the keeper's again
LOAD_SLACK = 4  # sessions above the least loaded replica past which affinity gives way to balance
PROBE_S = 0.5  # how often a replica that went down is tried again
HEDGE_S = 1.0  # a cheap stateless call not answered this long is sent to a sibling as well
HEDGED = frozenset({"prompt_ids", "pieces"})


def rank(session: str, replicas) -> list[str]:
    """Rendezvous order of the replicas for a session: the same on every router, and a replica's
    loss moves only the sessions it held."""
    return sorted(replicas, key=lambda r: hashlib.blake2b(f"{session}/{r}".encode(), digest_size=8).digest(),
                  reverse=True)


@dataclass
class Slot:
    client: MemberClient
    draining: bool = False
    down: bool = False


class PoolMember(_Typed):
    """One member's pool as a MemberClient: each session's calls go to its replica."""

    def __init__(self, name: str, pools: Pools):
        self.name = name
        self.pools = pools
        self.slots: dict[str, Slot] = {}  # replica id -> its client and state
        self.placed: dict[str, str] = {}  # session -> replica id
        self.turn = itertools.count()

    # -- the replicas ---------------------------------------------------------------------------

    def update(self, replicas: list[tuple], make: Callable[[object], MemberClient]) -> None:
        seen = set()
        for rid, actor, draining in replicas:
            seen.add(rid)
            if rid not in self.slots:
                self.slots[rid] = Slot(make(actor))
            self.slots[rid].draining = draining
        for rid in set(self.slots) - seen:  # gone from the pool: its sessions replay elsewhere
            slot = self.slots.pop(rid)
            if (channel := getattr(slot.client, "channel", None)) is not None:
                channel.close()

    def where(self, session: str) -> str | None:
        return self.placed.get(session)

    def pin(self, session: str, replica: str) -> None:
        """Place a session where it was (a named session's snapshot), if that replica still takes it."""
        if (slot := self.slots.get(replica)) is not None and not slot.draining:
            self.placed[session] = replica

    def _choose(self, session: str) -> str:
        taking = _preferred(list(self.slots), lambda r: not self.slots[r].draining, lambda r: not self.slots[r].down,
                            lambda r: not _silent(self.slots[r]))
        if not taking:
            raise MemberDown(f"member {self.name!r} has no replica")
        load = Counter(self.placed.values())
        least = min(load[r] for r in taking)
        return next(r for r in rank(session, taking) if load[r] <= least + LOAD_SLACK)

    def _replica(self, session: str, fresh: bool) -> tuple[str, MemberClient]:
        self.pools.look()
        rid = self.placed.get(session)
        slot = self.slots.get(rid) if rid is not None else None
        if slot is None or slot.draining or slot.down:
            if rid is not None and not fresh:  # its KV is on a replica that is gone or leaving
                self.placed.pop(session, None)
                raise SessionLost(session)
            rid = self.placed[session] = self._choose(session)
        return rid, self.slots[rid].client

    def _down(self, rid: str, session: str | None) -> None:
        """A replica's process is gone: new sessions go elsewhere until it answers again."""
        if session is not None:
            self.placed.pop(session, None)
        slot = self.slots.get(rid)
        if slot is None or slot.down:
            return
        slot.down = True
        self.pools.look(now=True)
        asyncio.get_running_loop().create_task(self._probe(rid, slot))

    async def _probe(self, rid: str, slot: Slot) -> None:
        while self.slots.get(rid) is slot:
            try:
                await asyncio.wait_for(slot.client.live_sessions(), 5 * PROBE_S)
                slot.down = False
                return
            except Exception:  # noqa: BLE001 - restarting, or gone for good (the keeper replaces it)
                self.pools.look(now=True)
                await asyncio.sleep(PROBE_S)

    # -- MemberClient ---------------------------------------------------------------------------

    def call(self, method: str, *args):
        """The calls that hold no session state go to any replica that is up and answering, in turn.
        A cheap one (HEDGED) not answered within HEDGE_S goes to a sibling as well, and the first answer
        wins: a replica that stopped must not hold every new request's tokenization until it is found
        silent. A score is a forward over the text, too dear to send twice."""
        if method in HEDGED:
            return asyncio.ensure_future(self._hedged(method, args))
        up = self._up()
        return up[next(self.turn) % len(up)].client.call(method, *args)

    def _up(self, but: Slot | None = None) -> list[Slot]:
        return _preferred([s for s in self.slots.values() if s is not but], lambda s: not s.down,
                          lambda s: not _silent(s))

    async def _hedged(self, method: str, args: tuple):
        up = self._up()
        if not up:
            raise MemberDown(f"member {self.name!r} has no replica")
        first = up[next(self.turn) % len(up)]
        calls = [_kept(first.client.call(method, *args))]
        done, _ = await asyncio.wait(calls, timeout=HEDGE_S)
        if not done and (others := self._up(but=first)):
            calls.append(_kept(others[next(self.turn) % len(others)].client.call(method, *args)))
            done, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
        if answered := [c for c in done if c.exception() is None]:
            return answered[0].result()
        waiting = [c for c in calls if c not in done]  # a failure came first: the other may yet answer
        return await (waiting or calls)[0]

    async def census(self, timeout_s: float) -> tuple[int, int, int]:
        """(sessions held on the replicas that answered within timeout_s, replicas that did not, replicas):
        one replica down or stopped leaves the member serving on its siblings (/health stays 200)."""
        async def held(slot: Slot) -> int | None:
            try:
                return await asyncio.wait_for(slot.client.live_sessions(), timeout_s)
            except Exception:  # noqa: BLE001 - down, stopped, restarting: not answering is the answer
                return None

        counts = await asyncio.gather(*(held(s) for s in self.slots.values()))
        answered = [c for c in counts if c is not None]
        return sum(answered), len(counts) - len(answered), len(counts)

    async def _sum_live(self) -> int:
        return sum(await asyncio.gather(*(s.client.live_sessions() for s in self.slots.values())))

    def live_sessions(self):
        return asyncio.ensure_future(self._sum_live())

    async def stream(self, req: StepRequest) -> AsyncIterator[StepResult]:
        rid, client = self._replica(req.session, req.fresh)
        try:
            async for part in client.stream(req):
                yield part
        except MemberDown:
            self._down(rid, req.session)
            raise

    def release(self, session: str, keep: bool = False):
        rid = self.placed.pop(session, None)
        if rid is None or rid not in self.slots:
            done = asyncio.get_running_loop().create_future()
            done.set_result(False)
            return done
        return self.slots[rid].client.release(session, keep)

    def can_open(self, session: str | None = None) -> bool:
        """Whether the session's replica can open a run now: a session new to this member is placed
        here; one whose replica is down or leaving is not (its turn replays it the usual way)."""
        if session is None:
            return False
        self.pools.look()
        if session not in self.placed and self.slots:
            self.placed[session] = self._choose(session)
        slot = self.slots.get(self.placed.get(session))
        return slot is not None and not slot.down and not slot.draining and slot.client.can_open()

    def open(self, req: StepRequest):
        rid = self.placed[req.session]  # placed by can_open, just before
        return _Opened(self, rid, req.session, self.slots[rid].client.open(req))

    # -- a pool of one, as tests and tools used to see a member ---------------------------------

    @property
    def sole(self) -> MemberClient:
        return next(iter(self.slots.values())).client

    @property
    def actor(self):
        return self.sole.actor

    @property
    def channel(self):
        return self.sole.channel


def _preferred(items: list, *tests) -> list:
    """The items that pass every test; failing that, those that pass all but the last test, and so on;
    failing every one, all the items (a pool with no ideal replica still uses its best)."""
    for n in range(len(tests), 0, -1):
        if passing := [i for i in items if all(test(i) for test in tests[:n])]:
            return passing
    return items


def _silent(slot: Slot) -> bool:
    """A replica that answers no PING (router/dataplane.py's Channel.silent): no new work goes there
    while a sibling answers; the sessions already on it wait for it as they would for a sole member."""
    channel = getattr(slot.client, "channel", None)
    return channel is not None and channel.silent()


def _kept(call: asyncio.Future) -> asyncio.Future:
    """A call whose answer may be left unread (its sibling's came first): its failure is not logged as
    never retrieved."""
    call.add_done_callback(lambda f: f.cancelled() or f.exception())
    return call


class _Opened:
    """A run opened ahead on a replica (router/dataplane.py's OpenRun), whose loss marks the replica down."""

    def __init__(self, pool: PoolMember, rid: str, session: str, run):
        self.pool, self.rid, self.session, self.inner = pool, rid, session, run

    def feed(self, delta: tuple, fresh: bool) -> None:
        self.inner.feed(delta, fresh)

    async def run(self, delta: tuple, fresh: bool) -> AsyncIterator[StepResult]:
        try:
            async for part in self.inner.run(delta, fresh):
                yield part
        except MemberDown:
            self.pool._down(self.rid, self.session)
            raise

    def cancel(self) -> None:
        self.inner.cancel()


class Pools:
    """The router's view of the pools, read from the keeper (its actor, or its Serve deployment's
    handle: both answer `view.remote()`), refreshed when older than REFRESH_S or when a replica fails."""

    def __init__(self, keeper, view: dict, make: Callable[[object, bytes], MemberClient]):
        self.keeper = keeper
        self.key = view["key"]
        self.make = lambda actor: make(actor, self.key)
        self.members = {name: PoolMember(name, self) for name in view["pools"]}
        self.version = -1
        self.checked = time.monotonic()
        self.reading: asyncio.Task | None = None
        self.apply(view)

    def apply(self, view: dict) -> None:
        self.checked = time.monotonic()
        if view["version"] != self.version:
            for name, replicas in view["pools"].items():
                self.members[name].update(replicas, self.make)
            self.version = view["version"]

    def look(self, now: bool = False) -> None:
        """Read the keeper's view in the background if it is old (or `now`); never waits for it."""
        if (now or time.monotonic() - self.checked > REFRESH_S) and (self.reading is None or self.reading.done()):
            self.checked = time.monotonic()
            self.reading = asyncio.get_running_loop().create_task(self.read())

    async def read(self) -> None:
        try:
            self.apply(await asyncio.wait_for(_detached_view(self.keeper), 10.0))
        except Exception:  # noqa: BLE001 - the keeper restarting: the view in hand serves meanwhile
            log.warning("the pools' keeper did not answer; keeping the view in hand", exc_info=True)


def _detached_view(keeper):
    """Asked as no request's child (a Serve request's cancellation must not cancel it: router/clients.py)."""
    import contextvars

    return contextvars.Context().run(keeper.view.remote)

"""The router's calls to its members, each with its bound and its retries (docs/architecture.md
invariants 1, 6 and 7): a run's call that survives the member losing the session, eager sync's
background catch-ups, and the releases that end a session. The turn loop (router/router.py) says
what to ask; this module makes sure it is answered in bounded time or fails with a clear error.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING

from mixserve.actors.messages import InputRefused, Segment, SessionLost, StepRequest, StepResult

from .clients import CallCancelled, MemberClient, MemberDown
from .request import MemberFailedError, RequestError, UnavailableError
from .session_log import Session

if TYPE_CHECKING:
    from .dataplane import OpenRun

log = logging.getLogger(__name__)
RELEASE_WAIT_S = 1.0  # how long a finished session waits for its members to confirm the release

# A run's request given the delta it carries and whether the member starts the session with it.
Request = Callable[[tuple[Segment, ...], bool], StepRequest]
# Sees each streamed part; True when no more are wanted.
OnPart = Callable[[StepResult], Awaitable[bool]]


class MemberCalls:
    """The router's calls to its members, bounded and retried; one per router."""

    def __init__(self, members: dict[str, MemberClient], retry_s: float, metrics=None):
        self.members = members  # name -> a MemberClient (router/clients.py), the router's own dict
        self.retry_s = retry_s  # member_retry_s: the bound on every answer and on the retries
        self.metrics = metrics
        self.syncs: dict[tuple[str, str], asyncio.Task] = {}  # (session, member) -> its background catch-up
        self.replays: Counter = Counter()  # member -> sessions replayed into it after it lost them (invariant 1)

    async def run(self, s: Session, member: str, request: Request, stats: Counter, on_part: OnPart | None = None,
                  opened: OpenRun | None = None) -> StepResult:
        """One run's call that survives the member losing the session (eviction, restart): the log is
        replayed from the prompt (docs/architecture.md invariant 1). `on_part(part)` sees each streamed
        part and returns True when no more are wanted; a retry asks only for the steps still missing.
        `opened`: the run opened ahead on the member (the first attempt starts it with the rest of
        the log)."""
        last = StepResult()

        async def attempt():
            nonlocal last, opened
            if (sync := self.syncs.pop((s.id, member), None)) is not None:
                await sync  # the background catch-up went first: its tokens are off the delta
            fresh = member not in s.cursor  # before take_delta marks the log as seen
            stats.update(trips=1)
            run, opened = opened, None
            parts = run.run(s.take_delta(member), fresh) if run is not None else \
                self.members[member].stream(request(s.take_delta(member), fresh))
            async for part in self.answered(member, parts):
                stats.update(forwards=part.forwards)
                last = part
                if on_part and await on_part(part):
                    break
            return last

        def lost():
            s.forget(member)
            self.replays[member] += 1
            if self.metrics:
                self.metrics.replays.inc(1, {"member": member})

        try:
            return await self.retrying(member, attempt, lost)
        except (RequestError, CallCancelled):
            raise
        except Exception as e:
            log.exception("member %r failed on session %s", member, s.id)
            raise MemberFailedError(member, e) from e

    async def bounded(self, member: str, call: Awaitable):
        """A call's answer within member_retry_s (see answered). A member that is down is named (several
        members' calls may wait under one retry: log-probs); one that refused the request's input
        (actors/messages.py's InputRefused) fails that request alone with a 400 naming it."""
        try:
            return await asyncio.wait_for(call, self.retry_s)
        except asyncio.TimeoutError:
            raise UnavailableError(f"member {member!r} did not answer within {self.retry_s:g} s") from None
        except MemberDown as e:
            e.member = member
            raise
        except Exception as e:
            cause = getattr(e, "cause", None) or e  # a Ray task error carries the member's own
            if isinstance(cause, InputRefused):  # the data plane rebuilds it as itself (actors/wire.py)
                raise RequestError(f"member {member!r} refused this request: {cause}", "prompt") from None
            raise

    async def answered(self, member: str, parts: AsyncIterator[StepResult]) -> AsyncIterator[StepResult]:
        """The parts of one call, each within member_retry_s: a member that is alive but does not answer (a
        paused process, a hung device) fails the sessions waiting on it like one that stays down
        (docs/architecture.md invariant 6), where the call alone would wait for it forever."""
        async with aclosing(parts):
            while True:
                try:
                    part = await self.bounded(member, anext(parts))
                except StopAsyncIteration:
                    return
                yield part

    async def retrying(self, member: str, attempt: Callable[[], Awaitable], lost: Callable[[], None] = lambda: None):
        """Run `attempt()`; a member that is down is retried with backoff for up to member_retry_s, then the
        request fails with 503 / UNAVAILABLE (docs/architecture.md invariant 6). The last try is at the
        bound itself: a member back within member_retry_s serves the request (the backoff's last step
        once ended the wait up to 1 s early, and a soak failed on a member back 7.8 s after its kill
        with the bound at 10). `lost` runs before each retry."""
        deadline = time.monotonic() + self.retry_s
        delay = 0.05
        while True:
            try:
                return await attempt()
            except (SessionLost, MemberDown) as e:
                if (left := deadline - time.monotonic()) <= 0:
                    raise UnavailableError(f"member {getattr(e, 'member', member)!r} is unavailable ({e}); "
                                           f"gave up after {self.retry_s:g} s") from None
                if isinstance(e, MemberDown):
                    await asyncio.sleep(min(delay, left))  # backoff while Ray restarts the member
                    delay = min(2 * delay, 1.0)
            lost()

    def sync_idle(self, s: Session, idle: list[str]) -> None:
        """eager_sync: send the tokens streamed so far to the idle members now, so that they catch up
        while the running member decodes, each on its own device. A member's next run waits for its
        sync first (see run): an async actor does not keep the order of calls. A sync is bounded like
        any call: one unanswered within member_retry_s fails that run with 503 (invariant 6)."""
        for member in idle:
            # A member without even the prompt gains nothing: it prefills when first chosen.
            if member not in s.cursor or (s.id, member) in self.syncs or s.cursor[member] == s.step:
                continue
            req = StepRequest(s.id, s.take_delta(member), s.step, 0, s.params)
            sync = self.syncs[(s.id, member)] = asyncio.create_task(self._sync(s, member, req))
            sync.add_done_callback(lambda t: t.cancelled() or t.exception())  # a failure is raised by the run

    async def _sync(self, s: Session, member: str, req: StepRequest) -> None:
        """A failed sync stays in `syncs`: the member's next run for the session raises its error."""
        try:
            async for _ in self.answered(member, self.members[member].stream(req)):
                pass
        except (SessionLost, MemberDown):
            s.forget(member)  # it will get the whole log when chosen
        except CallCancelled:
            pass  # the request is ending; release frees the session
        if self.syncs.get((s.id, member)) is asyncio.current_task():
            del self.syncs[(s.id, member)]

    async def release(self, s: Session, keep: bool = False) -> set[str]:
        """Free the session on every member that saw it (docs/architecture.md invariant 7), even when the request
        is being cancelled. The calls are sent before the first await, so no cancellation can drop
        them, and as no request's child, so Ray's recursive cancellation cannot either
        (router/clients.py). The wait for their answers runs under a shield and for RELEASE_WAIT_S
        at most: a member restarting or paused answers later (a restarted one holds nothing), and
        the request, with its admission slots, must not wait for it (the soak saw gone clients'
        slots held through a member's restart, refusing others with 429). With `keep` (a named
        session that can go on) each member holds the session's KV for its next turn instead, which
        is then not live; returns the members that hold it.
        """
        kept = set(s.cursor) if keep else set()
        for member in s.cursor:
            if (sync := self.syncs.pop((s.id, member), None)) is not None:
                sync.cancel()
                kept.discard(member)  # what it holds of the log is unknown: the next turn replays it
        members = list(s.cursor)
        calls = asyncio.gather(*(self.members[m].release(s.id, m in kept) for m in members), return_exceptions=True)
        calls.add_done_callback(lambda done: _failed_releases(done, members, s.id))
        try:
            await _awhile(calls)
        except asyncio.CancelledError:
            await _awhile(calls)
            raise
        return kept


def _failed_releases(calls: asyncio.Future, members: list[str], session: str) -> None:
    """A release a member failed (not one it missed by being down) leaves the session on it: said in
    the log, as nothing else would show it (a vLLM member's releases once all failed unseen)."""
    if calls.cancelled():
        return
    for member, out in zip(members, calls.result()):
        if isinstance(out, Exception) and not isinstance(out, (MemberDown, SessionLost, CallCancelled)):
            log.warning("member %r failed to release session %s: %r", member, session, out)


async def _awhile(calls: asyncio.Future) -> None:
    """Wait up to RELEASE_WAIT_S for calls that are already sent; they go on if it is not enough."""
    try:
        await asyncio.wait_for(asyncio.shield(calls), RELEASE_WAIT_S)
    except asyncio.TimeoutError:
        pass

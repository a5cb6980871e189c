"""How the router reaches a member (actors/protocol.py's Member), one client per transport, chosen once
when the ensemble is built (mixserve/serving/ensemble.py): a member actor over its data plane
(`ChannelMember`, config data_plane: zmq), a member actor over Ray calls only (`RayMember`,
data_plane: ray), or a core in this process (`LocalMember`: tests, ce-sequential). `MemberClient` is
that reach as a type: what the router may ask of a
member, each call sent *now* and awaited later. Sending at call time matters for `release`: a
release that is sent cannot be lost to a cancellation that lands before it is awaited.
"""
from __future__ import annotations

import asyncio
import contextvars
from contextlib import aclosing, contextmanager
from collections.abc import AsyncIterator, Awaitable
from typing import Protocol

from mixserve.actors.messages import Scores, StepRequest, StepResult


class MemberClient(Protocol):
    """The router's side of a member: the same names as actors/protocol.py's Member."""

    def prompt_ids(self, prompt: str | None, messages: list[dict] | None) -> Awaitable[list[int]]: ...

    def pieces(self) -> Awaitable[list[bytes]]: ...

    def score(self, ids: list[int], top: int, rows: bool) -> Awaitable[Scores]: ...

    def live_sessions(self) -> Awaitable[int]: ...

    def stream(self, req: StepRequest) -> AsyncIterator[StepResult]:
        """A run's tokens as the member samples them (its Member.step)."""

    def release(self, session: str, keep: bool = False) -> Awaitable[bool]:
        """Free the session on the member; `keep`: hold its KV for its next turn (a named session)."""

    def can_open(self, session: str | None = None) -> bool:
        """Whether a run of `session` can be opened ahead on this member now (it has a data plane,
        connected); only then `open`."""

    def open(self, req: StepRequest):
        """The session's next run, opened ahead (router/dataplane.py's OpenRun); only when can_open()."""


class _Typed:
    """MemberClient's plain calls, on top of a client's `call(method, *args)`."""

    def prompt_ids(self, prompt: str | None, messages: list[dict] | None) -> Awaitable[list[int]]:
        return self.call("prompt_ids", prompt, messages)

    def pieces(self) -> Awaitable[list[bytes]]:
        return self.call("pieces")

    def score(self, ids: list[int], top: int, rows: bool) -> Awaitable[Scores]:
        return self.call("score", ids, top, rows)

    def live_sessions(self) -> Awaitable[int]:
        return self.call("live_sessions")

    def can_open(self, session: str | None = None) -> bool:
        return False  # a run opened ahead needs a data plane (ChannelMember)


class MemberDown(Exception):
    """The member's process is gone or restarting; the router retries within its bound."""


class CallCancelled(Exception):
    """Ray cancelled the call with the request that made it (Serve's recursive ray.cancel of a
    request whose client went away): the request is ending, nothing failed."""


class RayMember(_Typed):
    """A member actor, every call a Ray task (config data_plane: ray)."""

    def __init__(self, actor):
        self.actor = actor

    def call(self, method: str, *args) -> asyncio.Future:
        return asyncio.ensure_future(_down_on_actor_error(getattr(self.actor, method).remote(*args)))

    def release(self, session: str, keep: bool = False) -> asyncio.Future:
        """Sent as no request's child. Serve cancels the request of a client that went away with
        ray.cancel(recursive=True), which cancels every task the request submitted, the releases in
        its cleanup too: the member would hold the session for good (seen in three runs of 40 HTTP
        disconnects: from the 1st, 11th and 37th on). An empty context carries no Ray task id
        (ray-project/ray#52476)."""
        ref = contextvars.Context().run(self.actor.release.remote, session, *((True,) if keep else ()))
        return asyncio.ensure_future(_down_on_actor_error(ref))

    async def stream(self, req: StepRequest) -> AsyncIterator[StepResult]:
        if req.distribution or req.steps == 1:  # one part: a plain call returns it faster than a stream
            yield await self.call("whole", req)
            return
        parts = self.actor.step.options(num_returns="streaming").remote(req)
        async for ref in _down_on_actor_error_iter(parts):
            yield await _down_on_actor_error(ref)


class ChannelMember(RayMember):
    """A member actor over its data plane (router/dataplane.py's Channel): steps, releases and runs
    opened ahead travel on the channel; only the rare calls (prompt_ids, pieces, score, ...) are Ray
    tasks (config data_plane: zmq, the default)."""

    def __init__(self, actor, channel):
        super().__init__(actor)
        self.channel = channel

    def release(self, session: str, keep: bool = False) -> asyncio.Future:
        return self.channel.release(session, keep)  # sent before the caller's next await, as no request's child

    async def stream(self, req: StepRequest) -> AsyncIterator[StepResult]:
        async with aclosing(self.channel.stream(req)) as parts:
            async for part in parts:
                yield part

    def can_open(self, session: str | None = None) -> bool:
        return self.channel.can_open()

    def open(self, req: StepRequest):
        return self.channel.open(req)


class LocalMember(_Typed):
    """A core called in this process. A run is answered whole (no batching): the baseline and the fakes."""

    def __init__(self, core):
        self.core = core

    def call(self, method: str, *args) -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        try:
            done.set_result(getattr(self.core, method)(*args))
        except Exception as e:  # noqa: BLE001 - raised where it is awaited, as a Ray call's would be
            done.set_exception(e)
        return done

    def release(self, session: str, keep: bool = False) -> asyncio.Future:
        return self.call("release", session, *((True,) if keep else ()))

    async def stream(self, req: StepRequest) -> AsyncIterator[StepResult]:
        await asyncio.sleep(0)  # a yield, not a wait: other sessions interleave, as they do on a remote member
        yield await self.call("step", req)


@contextmanager
def ray_errors():
    """Ray's lifecycle errors in the router's terms: a dead or restarting actor is MemberDown, a call
    cancelled with its request is CallCancelled. The member's own exceptions pass through."""
    import ray

    try:
        yield
    except ray.exceptions.RayActorError as e:
        raise MemberDown(str(e).splitlines()[0]) from None
    except ray.exceptions.TaskCancelledError:
        raise CallCancelled() from None


async def _down_on_actor_error(ref):
    with ray_errors():
        return await ref


async def _down_on_actor_error_iter(parts):
    with ray_errors():
        async for ref in parts:
            yield ref

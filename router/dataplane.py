"""The router's end of a member's data plane (actors/dataplane.py; docs/architecture.md, "Data plane").

One Channel per (router replica, member): a DEALER socket on which every step, streamed part and
release of that member's sessions travels, each call tagged with an id. Ray still tells the router
when the member dies: the channel holds one `watch` call open on the member actor, which never
answers and which Ray fails the moment the process is gone. Then every call waiting on the channel
fails with MemberDown (the router replays, as it does for a Ray call), and the next call reconnects
to the restarted process, which opens a new socket on a new port.
"""
from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import time
from collections.abc import AsyncIterator

import zmq
import zmq.asyncio

from mixserve.actors import wire
from mixserve.actors.dataplane import PING_S, keys
from mixserve.actors.mailbox import Mailbox
from mixserve.actors.messages import StepRequest, StepResult

from .clients import MemberDown, ray_errors

# A member heard from less recently than this is silent (Channel.silent): three PINGs unanswered.
SILENT_S = 3 * PING_S

log = logging.getLogger(__name__)


class OpenRun:
    """A run opened ahead on a member: `feed` sends it the log as it grows, `run` the last of it,
    and yields the run's parts; `cancel` drops it (the run before it ended the text)."""

    def __init__(self, channel: Channel, sock, rid: int, inbox: Mailbox):
        self.channel, self.sock, self.rid, self.inbox = channel, sock, rid, inbox
        self.started = False

    def feed(self, delta: tuple, fresh: bool) -> None:
        self.channel._post(self.sock, wire.Feed(self.rid, delta, fresh, False))

    def run(self, delta: tuple, fresh: bool) -> AsyncIterator[StepResult]:
        self.started = True
        self.channel._post(self.sock, wire.Feed(self.rid, delta, fresh, True))
        return self.channel._parts(self.sock, self.rid, self.inbox)

    def cancel(self) -> None:
        if not self.started:
            self.channel.pending.pop(self.rid, None)
            self.channel._post(self.sock, wire.Cancel(self.rid))


class Channel:
    def __init__(self, actor, key: bytes, host: str | None = None):
        self.actor = actor
        self.key = key
        self.host = host  # config's data_plane_host: where the member listens (None: it decides)
        self.sock: zmq.asyncio.Socket | None = None
        self.endpoint = ""  # the member's address, once connected
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connecting: asyncio.Task | None = None
        self.pending: dict[int, Mailbox] = {}
        self.ids = itertools.count()
        self.opened = 0  # runs opened ahead (tests, bench)
        self.heard = 0.0  # when the member last sent a frame (a PONG every PING_S at least), monotonic

    async def stream(self, req: StepRequest) -> AsyncIterator[StepResult]:
        """A step's parts as the member sends them; a step with one part (a ce distribution, a
        one-token run) comes as one frame."""
        one = req.distribution or req.steps == 1
        sock, rid, inbox = await self._send(wire.Whole if one else wire.Step, req)
        async for part in self._parts(sock, rid, inbox):
            yield part

    def silent(self) -> bool:
        """Connected, yet nothing heard from the member for SILENT_S, not even the PONG it owes each
        PING: stopped or hung, not just busy (its answers come from its event loop, its compute from
        a thread). Not known while unconnected on this event loop (a socket of an earlier loop hears
        nothing)."""
        return self.can_open() and time.monotonic() - self.heard > SILENT_S

    def can_open(self) -> bool:
        """Connected on this event loop: a run can be opened now, without waiting (a member that is
        restarting gets its run when its turn comes, the usual way)."""
        return self.sock is not None and self.loop is asyncio.get_running_loop()

    def open(self, req: StepRequest) -> OpenRun:
        """The session's next run on this member, opened now and started by its last feed
        (actors/dataplane.py's `_open`). Only when can_open()."""
        rid = next(self.ids)
        inbox = self.pending[rid] = Mailbox()
        self._post(self.sock, wire.Open(rid, req))
        self.opened += 1
        return OpenRun(self, self.sock, rid, inbox)

    async def _parts(self, sock, rid: int, inbox: Mailbox) -> AsyncIterator[StepResult]:
        done = False
        try:
            while True:
                frame = await anext(inbox)
                if isinstance(frame, wire.Part):
                    yield frame.result
                    continue
                done = True
                if isinstance(frame, wire.Done):
                    yield frame.value
                elif isinstance(frame, wire.Error):
                    raise wire.error(frame)
                return
        finally:
            self.pending.pop(rid, None)
            if not done:  # the caller stopped early: the member drops the run now
                self._post(sock, wire.Cancel(rid))

    def _post(self, sock, frame: wire.Frame) -> None:
        """A frame that needs no answer, sent now (never blocks: no high-water mark)."""
        if sock is self.sock:
            sock.send(wire.encode(frame), flags=zmq.NOBLOCK)

    def release(self, session: str, keep: bool = False) -> asyncio.Future:
        """Sent before the caller's next await (a task's first step), answered True when freed."""
        return asyncio.ensure_future(self._answer(lambda rid, s: wire.Release(rid, s, keep), session))

    async def _answer(self, kind: type[wire.Frame], body):
        _, rid, inbox = await self._send(kind, body)
        try:
            frame = await anext(inbox)
        finally:
            self.pending.pop(rid, None)
        if isinstance(frame, wire.Error):
            raise wire.error(frame)
        return frame.value

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
        self.sock = None

    async def _send(self, kind: type[wire.Frame], body) -> tuple[zmq.asyncio.Socket, int, Mailbox]:
        sock = await self._ready()
        rid = next(self.ids)
        inbox = self.pending[rid] = Mailbox()
        await sock.send(wire.encode(kind(rid, body)), copy=False)
        return sock, rid, inbox

    async def _ready(self) -> zmq.asyncio.Socket:
        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # a new event loop (Engine.generate runs one per call): start over
            if self.sock is not None:
                self.sock.close(0)
            self.sock, self.pending, self.loop, self.connecting = None, {}, loop, None
        if self.sock is not None:
            return self.sock
        if self.connecting is None or self.connecting.done():
            self.connecting = loop.create_task(self._connect())
        return await asyncio.shield(self.connecting)

    async def _connect(self) -> zmq.asyncio.Socket:
        import ray.util

        with ray_errors():
            endpoint = await _detached(self.actor.data_plane.remote, self.key, ray.util.get_node_ip_address(),
                                       self.host)
        sock = _context().socket(zmq.DEALER)
        sock.curve_serverkey = keys(self.key, "member")[0]
        sock.curve_publickey, sock.curve_secretkey = keys(self.key, "router")
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 0)
        sock.ipv6 = "[" in endpoint
        sock.connect(endpoint)
        self.sock, self.endpoint, self.heard = sock, endpoint, time.monotonic()
        asyncio.create_task(self._read(sock))
        asyncio.create_task(self._watch(sock, _detached(self.actor.watch.remote)))
        asyncio.create_task(self._ping(sock))
        return sock

    async def _ping(self, sock) -> None:
        """Renew this router's lease on its sessions (actors/dataplane.py's LEASE_S) while the socket is ours."""
        while self.sock is sock:
            self._post(sock, wire.Ping(0))
            await asyncio.sleep(PING_S)

    async def _read(self, sock) -> None:
        try:
            while self.sock is sock:
                data = await sock.recv()
                try:
                    frame = wire.to_router(data)
                except wire.DecodeError:  # the member sent garbage: say so, keep reading
                    log.exception("data plane: a frame from %s that does not decode", self.endpoint)
                    continue
                self.heard = time.monotonic()
                if isinstance(frame, wire.Pong):
                    continue
                if (inbox := self.pending.get(frame.rid)) is not None:
                    inbox.put(frame)
        except (asyncio.CancelledError, zmq.ZMQError):
            pass

    async def _watch(self, sock, ref) -> None:
        try:
            with ray_errors():
                await ref
        except MemberDown as e:
            if self.sock is sock:
                self._drop(e)

    def _drop(self, error: Exception) -> None:
        """The member is gone: fail every call waiting on it, close the socket."""
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close(0)
        pending, self.pending = self.pending, {}
        for inbox in pending.values():
            inbox.fail(error)


def _detached(remote, *args):
    """A Ray call made as no request's child: Serve cancels a gone client's request with
    ray.cancel(recursive=True), which would cancel the channel's calls too (router/clients.py)."""
    return contextvars.Context().run(remote, *args)


_CONTEXT: zmq.asyncio.Context | None = None


def _context() -> zmq.asyncio.Context:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = zmq.asyncio.Context()
    return _CONTEXT

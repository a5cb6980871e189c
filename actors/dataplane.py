"""A member's end of the data plane (docs/architecture.md, "Data plane"): its steps, streamed parts
and releases over one long-lived ZMQ socket, instead of a Ray task per run.

Ray still places, starts, restarts and health-checks the member and carries the rare calls (info,
prompt_ids, score, ...); a Ray call is a task submission, a scheduling decision and a reply through
the raylet's machinery (about 1 ms on 2 cores), where a message on an open socket is about 0.1 ms.

The socket is a ROUTER bound to one address (never every interface unless configured to): loopback
when the router runs on the same node, else the node's IP. It is authenticated and encrypted with
CurveZMQ: both key pairs derive from the deployment's key (`keys`), which the router hands the member
over Ray; a peer without it cannot complete the handshake, so it can neither drive the member nor
read its tokens.
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import msgspec
import zmq
import zmq.asyncio
import zmq.auth.asyncio

from . import wire
from .mailbox import Mailbox
from .messages import StepRequest

log = logging.getLogger(__name__)
# A router that sends nothing for this long is gone (it pings every PING_S): the sessions it opened here
# are released. Members outlive routers (cluster/pools.py), so a dead router's sessions would stay for good.
LEASE_S = 30.0
REAP_S = 2.0  # how often the member looks for such routers
# How often a router pings each member, and so how soon it can tell one that stopped answering (a
# stopped process, a hung device: router/pools.py places no new work there while a sibling answers).
PING_S = 0.5


def keys(key: bytes, role: str) -> tuple[bytes, bytes]:
    """(public, secret) CurveZMQ keys for `role` ("member" or "router") from the deployment's key."""
    secret = zmq.utils.z85.encode(hashlib.sha256(role.encode() + b"\0" + key).digest())
    return zmq.curve_public(secret), secret


class _OnlyRouter:
    """ZAP: admit the one client key the deployment's key gives, refuse every other."""

    def __init__(self, public: bytes):
        self.public = public

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self.public


@dataclass
class Feeds:
    """An open run's feeds as the router sends them."""
    session: str
    box: Mailbox[wire.Feed] = field(default_factory=Mailbox)


def merged(feeds: list[wire.Feed]) -> tuple[tuple, bool, bool]:
    """Feeds that piled up during a catch-up, as one (delta, fresh, final): segments append one after
    another, so several deltas are one; `fresh` only ever comes first."""
    return sum((f.delta for f in feeds), ()), feeds[0].fresh, feeds[-1].final


class DataPlane:
    def __init__(self, member, key: bytes, host: str):
        self.member = member  # the engine (actors/protocol.py's Member): step, whole, release
        self.key = key
        self.ctx = zmq.asyncio.Context()
        self.auth = zmq.auth.asyncio.AsyncioAuthenticator(self.ctx)
        self.auth.start()
        self.auth.configure_curve_callback("*", credentials_provider=_OnlyRouter(keys(key, "router")[0]))
        self.sock = self.ctx.socket(zmq.ROUTER)
        public, secret = keys(key, "member")
        self.sock.curve_server = True
        self.sock.curve_publickey, self.sock.curve_secretkey = public, secret
        self.sock.setsockopt(zmq.SNDHWM, 0)  # a ROUTER drops what is past its high-water mark: never
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.ipv6 = host.startswith("[")
        port = self.sock.bind_to_random_port(f"tcp://{host}")
        self.endpoint = f"tcp://{host}:{port}"
        self.tasks: dict[tuple[bytes, int], asyncio.Task] = {}
        self.feeds: dict[tuple[bytes, int], Feeds] = {}  # an open run's log so far, as the router sends it
        self.arrived: dict[tuple[bytes, int], float] = {}  # when a run's starting frame came in
        self.trace: deque = deque(maxlen=4096)  # (session, first step, frame in, first token out)
        self.seen: dict[bytes, float] = {}  # router (its socket's identity) -> when it last sent a frame
        self.opened: dict[str, bytes] = {}  # live session -> the router whose run last touched it
        self.reaper = asyncio.create_task(self._reap())
        self._handlers = {wire.Step: self._step, wire.Open: self._open, wire.Whole: self._whole,
                          wire.Release: self._release}
        self.server = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            peer, data = await self.sock.recv_multipart()
            try:
                frame = wire.to_member(data)
            except wire.DecodeError:  # an authenticated peer sent garbage: say so, keep serving
                log.exception("data plane: a frame that does not decode")
                continue
            key = (peer, frame.rid)
            self.seen[peer] = time.monotonic()
            if isinstance(frame, wire.Ping):
                await self._send(peer, wire.Pong(0))
                continue
            if isinstance(frame, (wire.Step, wire.Whole, wire.Open)):
                self.opened[frame.req.session] = peer
            if isinstance(frame, wire.Cancel):
                self.feeds.pop(key, None)
                self.arrived.pop(key, None)
                if (task := self.tasks.pop(key, None)) is not None:
                    task.cancel()
                continue
            if isinstance(frame, wire.Feed):
                if (feeds := self.feeds.get(key)) is not None:
                    feeds.box.put(frame)
                    if frame.final:
                        self.arrived[key] = time.time()
                continue
            if isinstance(frame, (wire.Step, wire.Whole)):
                self.arrived[key] = time.time()
            if isinstance(frame, wire.Open):  # before its task starts: the feeds that follow at once must find it
                self.feeds[key] = Feeds(frame.req.session)
            if isinstance(frame, wire.Release):  # a run opened for the session will never be started: drop it
                self.opened.pop(frame.session, None)
                for k in [k for k, f in self.feeds.items() if f.session == frame.session]:
                    self.feeds.pop(k)
                    if (task := self.tasks.pop(k, None)) is not None:
                        task.cancel()
            task = asyncio.create_task(self._handlers[type(frame)](peer, frame))
            self.tasks[key] = task
            task.add_done_callback(lambda _, k=key: self.tasks.pop(k, None))

    async def _step(self, peer: bytes, frame: wire.Step | wire.Open) -> None:
        rid, req = frame.rid, frame.req
        parts = self.member.step(req)
        try:
            async for part in parts:
                self._traced(peer, rid, req)
                await self._send(peer, wire.Part(rid, part))
            await self._send(peer, wire.End(rid))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the member's fault: the router fails the request with it
            await self._send(peer, wire.failed(rid, e))
        finally:
            self.arrived.pop((peer, rid), None)
            await parts.aclose()  # a cancelled run leaves the batch now (actors/engine.py's `step`)

    async def _open(self, peer: bytes, frame: wire.Open) -> None:
        """The next run of a session, opened while another member decodes the run before it
        (docs/architecture.md, "The next run in flight"). The log arrives in feeds as the other
        member's tokens do; each is caught up at once in this member's batches (what piled up during
        a catch-up goes in one), and the last feed starts the run, which answers on this call's id."""
        rid, req = frame.rid, frame.req
        feeds = self.feeds[(peer, rid)].box
        try:
            delta, fresh, final = req.delta, req.fresh, False
            while not final:
                if delta or fresh:
                    sync = StepRequest(req.session, delta, req.first_step, 0, req.sampling, fresh=fresh)
                    async for _ in self.member.step(sync):
                        pass
                delta, fresh, final = merged(await feeds.drain())
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the router replays the session the usual way
            return await self._send(peer, wire.failed(rid, e))
        finally:
            self.feeds.pop((peer, rid), None)
        await self._step(peer, wire.Open(rid, msgspec.structs.replace(req, delta=delta, fresh=fresh)))

    async def _whole(self, peer: bytes, frame: wire.Whole) -> None:
        await self._call(peer, frame.rid, self.member.whole, frame.req, traced=True)

    async def _release(self, peer: bytes, frame: wire.Release) -> None:
        await self._call(peer, frame.rid, lambda session: self.member.release(session, frame.keep), frame.session)

    async def _call(self, peer: bytes, rid: int, method, body, traced: bool = False) -> None:
        try:
            out = method(body)
            out = await out if inspect.isawaitable(out) else out
            if traced:
                self._traced(peer, rid, body)
            await self._send(peer, wire.Done(rid, out))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            await self._send(peer, wire.failed(rid, e))
        finally:
            self.arrived.pop((peer, rid), None)

    def _traced(self, peer: bytes, rid: int, req: StepRequest) -> None:
        """A run's first token is going out: when its frame came in and now, for `mixserve bench`'s
        breakdown of a switch (wall clock: the router compares it with its own on the same node)."""
        if (arrived := self.arrived.pop((peer, rid), None)) is not None:
            self.trace.append((req.session, req.first_step, arrived, time.time()))

    async def _send(self, peer: bytes, frame: wire.Frame) -> None:
        await self.sock.send_multipart([peer, wire.encode(frame)], copy=False)

    async def _reap(self) -> None:
        """Release the sessions of routers silent past LEASE_S (killed: a live one pings every PING_S)."""
        while True:
            await asyncio.sleep(REAP_S)
            now = time.monotonic()
            gone = {peer for peer, at in self.seen.items() if now - at > LEASE_S}
            for peer in gone:
                del self.seen[peer]
            for session in [s for s, peer in self.opened.items() if peer in gone]:
                del self.opened[session]
                log.warning("data plane: session %s released, its router is gone", session)
                try:
                    out = self.member.release(session)
                    await out if inspect.isawaitable(out) else None
                except Exception:  # noqa: BLE001 - the next session's reap must still run
                    log.exception("data plane: releasing %s", session)

    def close(self) -> None:
        self.server.cancel()
        self.reaper.cancel()
        for task in self.tasks.values():
            task.cancel()
        self.auth.stop()
        self.sock.close(0)
        self.ctx.term()

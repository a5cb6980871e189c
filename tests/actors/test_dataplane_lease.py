"""A router's lease on the sessions it opened (actors/dataplane.py): members outlive routers, so a router
that stops sending (killed) has its sessions released after LEASE_S, and a live router's, which pings,
are kept (docs/architecture.md invariant 7)."""
import asyncio

import zmq
import zmq.asyncio

from mixserve.actors import dataplane, wire
from mixserve.actors.dataplane import DataPlane, keys
from mixserve.actors.messages import SamplingParams, Segment, StepRequest
from tests.fakes import FakeCore

KEY = bytes(range(32))


def _dealer(ctx, endpoint: str):
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_serverkey = keys(KEY, "member")[0]
    sock.curve_publickey, sock.curve_secretkey = keys(KEY, "router")
    sock.connect(endpoint)
    return sock


async def _open(sock, session: str) -> None:
    req = StepRequest(session, (Segment((1, 2, 3)),), 0, 1, SamplingParams(seed=1), fresh=True)
    await sock.send(wire.encode(wire.Whole(1, req)))
    assert isinstance(wire.to_router(await asyncio.wait_for(sock.recv(), 30)), wire.Done)


def test_a_silent_routers_sessions_are_released_and_a_pinging_ones_kept(monkeypatch):
    monkeypatch.setattr(dataplane, "LEASE_S", 0.5)
    monkeypatch.setattr(dataplane, "REAP_S", 0.05)
    member = FakeCore("a")

    async def scenario():
        plane = DataPlane(member, KEY, "127.0.0.1")
        ctx = zmq.asyncio.Context()
        try:
            alive, dead = _dealer(ctx, plane.endpoint), _dealer(ctx, plane.endpoint)
            await _open(alive, "alive")
            await _open(dead, "dead")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while "dead" in member.sessions:  # the silent router's lease runs out (bounded)
                assert loop.time() < deadline, "the silent router's session was never released"
                await alive.send(wire.encode(wire.Ping(0)))
                await asyncio.sleep(0.05)
            assert "alive" in member.sessions  # renewed all along
        finally:
            plane.close()
            ctx.destroy(linger=0)

    asyncio.run(scenario())


def test_a_ping_is_answered_with_a_pong():
    """What lets a router tell a member that stopped (router/pools.py's silent replicas) from one that is busy."""
    member = FakeCore("a")

    async def scenario():
        plane = DataPlane(member, KEY, "127.0.0.1")
        ctx = zmq.asyncio.Context()
        try:
            sock = _dealer(ctx, plane.endpoint)
            await sock.send(wire.encode(wire.Ping(0)))
            return wire.to_router(await asyncio.wait_for(sock.recv(), 30))
        finally:
            plane.close()
            ctx.destroy(linger=0)

    assert isinstance(asyncio.run(scenario()), wire.Pong)

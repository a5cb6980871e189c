"""The member data plane (actors/dataplane.py, router/dataplane.py): steps travel on it, the same
texts as over Ray calls, only to a peer holding the deployment's key, on loopback when the router is
on the member's node."""
import asyncio
import time

import psutil
import pytest
import ray
import zmq

from mixserve.actors import wire
from mixserve.actors.dataplane import keys
from mixserve.actors.messages import SamplingParams, Segment, StepRequest
from mixserve.serving.ensemble import build_ensemble
from mixserve.router.clients import RayMember


def _ask(sock: zmq.Socket, session: str, timeout_ms: int):
    """One step request on a raw socket; the member's first frame, or None if none came (a socket
    whose handshake failed has no peer to send to: its send times out)."""
    req = StepRequest(session, (Segment((1, 2, 3)),), 0, 2, SamplingParams(seed=1), fresh=True)
    try:
        sock.send(wire.encode(wire.Step(7, req)))
    except zmq.Again:
        return None
    return wire.to_router(sock.recv()) if sock.poll(timeout_ms) else None


def _socket(ctx, endpoint: str, server_key: bytes | None = None, client: tuple[bytes, bytes] | None = None):
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 2000)
    if server_key is not None:
        sock.curve_serverkey = server_key
        sock.curve_publickey, sock.curve_secretkey = client or zmq.curve_keypair()
    sock.connect(endpoint)
    return sock


def _without_channels(engine, **request):
    """The same request with every call a Ray task (the clients of data_plane: ray): no data plane, no
    run opened ahead."""
    kept = dict(engine.router.members)
    engine.router.members.update({name: RayMember(m.actor) for name, m in kept.items()})
    try:
        return engine.generate(**request).choices[0].text
    finally:
        engine.router.members.update(kept)


@pytest.fixture(params=["ensemble.yaml", "hetero.yaml"])
def engine(request, tiny_dir, ray_local):
    """The shared-tokenizer pair, and members with different tokenizers; each closed after its test
    (the session's ensembles take the local Ray's CPUs)."""
    with build_ensemble(tiny_dir / request.param) as engine:
        yield engine


def test_steps_travel_on_the_data_plane_and_give_the_texts_of_ray_calls(engine):
    channels = {name: m.channel for name, m in engine.router.members.items()}
    before = {name: (next(c.ids), c.opened) for name, c in channels.items()}
    ask = dict(prompt="the moon", max_tokens=32, seed=11)
    on_plane = engine.generate(**ask).choices[0].text
    for name, c in channels.items():
        assert next(c.ids) > before[name][0] + 1, f"no step of {name} went on the data plane"
        assert c.opened > before[name][1], f"no run of {name} was opened ahead"
    assert on_plane == _without_channels(engine, **ask) and on_plane


def test_a_text_that_stops_early_leaves_no_run_open(ensemble):
    text = ensemble.generate(prompt="the sun", max_tokens=40, seed=5).choices[0].text
    stop = text[len(text) // 3: len(text) // 3 + 2]  # the text ends a third of the way in
    short = ensemble.generate(prompt="the sun", max_tokens=40, seed=5, stop=[stop])
    assert short.choices[0].finish_reason == "stop" and len(short.choices[0].text) < len(text)
    deadline = time.monotonic() + 30
    while True:  # the cancels are frames in flight: poll the members, with a bound
        stats = [ray.get(m.actor.data_plane_stats.remote(), timeout=60) for m in ensemble.router.members.values()]
        if all(x == {"calls": 0, "open_runs": 0} for x in stats) or time.monotonic() > deadline:
            break
    assert stats == [{"calls": 0, "open_runs": 0}] * 2
    assert ensemble.live_sessions() == {"a": 0, "b": 0}


def test_only_the_deployments_key_drives_a_member(ensemble):
    ensemble.generate(prompt="hello", max_tokens=2, seed=1)  # connected
    channel = ensemble.router.members["a"].channel
    endpoint, key = channel.endpoint, channel.key
    ctx = zmq.Context()
    try:
        plain = _socket(ctx, endpoint)  # no CurveZMQ at all
        # knows the member's public key (as a sniffer could) but not the deployment's key
        stranger = _socket(ctx, endpoint, keys(key, "member")[0])
        assert _ask(plain, "intruder-1", 1500) is None
        assert _ask(stranger, "intruder-2", 1500) is None
        owner = _socket(ctx, endpoint, keys(key, "member")[0], keys(key, "router"))
        frame = _ask(owner, "owner", 30_000)  # the same request, with the key: answered
        assert isinstance(frame, wire.Part) and frame.rid == 7 and len(frame.result.tokens) == 1
        assert plain.poll(0) == 0 and stranger.poll(0) == 0
        _release(owner, "owner")
        assert ensemble.live_sessions()["a"] == 0  # the intruders' sessions never existed
    finally:
        ctx.destroy(linger=0)


def _release(sock: zmq.Socket, session: str) -> None:
    sock.send(wire.encode(wire.Release(8, session)))
    while True:  # a step's remaining parts, then the release's answer
        assert sock.poll(30_000)
        if wire.to_router(sock.recv()).rid == 8:
            return


@pytest.mark.parametrize("garbage", [b"\xc1", wire.encode([int(wire.Kind.STEP), 9, "not a request"]),
                                     wire.encode([int(wire.Kind.FEED), 9, 5]), wire.encode([42, 9, None]),
                                     wire.encode([int(wire.Kind.PART), 9, []])],
                         ids=["not msgpack", "a step with a bad body", "a feed with a bad body", "an unknown kind",
                              "a member's frame"])
def test_a_malformed_frame_is_dropped_and_the_member_serves_on(ensemble, garbage, request):
    """Even from a peer holding the key: the frame is logged and dropped, the same connection's next
    request is answered and the ensemble's own channel still serves."""
    session = f"after-garbage-{request.node.callspec.id}"  # a released session's name is not served again
    ensemble.generate(prompt="hello", max_tokens=2, seed=1)
    channel = ensemble.router.members["a"].channel
    ctx = zmq.Context()
    try:
        owner = _socket(ctx, channel.endpoint, keys(channel.key, "member")[0], keys(channel.key, "router"))
        owner.send(garbage)
        frame = _ask(owner, session, 30_000)
        assert isinstance(frame, wire.Part) and frame.rid == 7
        _release(owner, session)
    finally:
        ctx.destroy(linger=0)
    assert ensemble.generate(prompt="hello", max_tokens=2, seed=1).choices[0].text


def test_a_member_listens_on_loopback_only_when_its_router_is_on_its_node(ensemble):
    ensemble.generate(prompt="hello", max_tokens=2, seed=1)
    for name, member in ensemble.router.members.items():
        host, port = member.channel.endpoint.removeprefix("tcp://").rsplit(":", 1)
        assert host == "127.0.0.1"
        pid = ray.get(member.actor.stats.remote(), timeout=60)["pid"]
        listening = {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
        assert ("127.0.0.1", int(port)) in listening
        assert not {("0.0.0.0", int(port)), ("::", int(port))} & listening


def test_without_a_channel_a_member_still_answers_over_ray_calls(ensemble):
    actor = ensemble.router.members["b"].actor
    member = RayMember(actor)

    async def one():
        req = StepRequest("ray-path", (Segment((1, 2, 3)),), 0, 3, SamplingParams(seed=2), fresh=True)
        parts = [p async for p in member.stream(req)]
        await member.release("ray-path")
        return parts

    parts = asyncio.run(one())
    assert sum(len(p.tokens) for p in parts) == 3
    assert ensemble.live_sessions()["b"] == 0


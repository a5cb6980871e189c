"""Sessions continue across requests and router restarts from msgpack snapshots of their log."""
import asyncio

import pytest

from mixserve.router.members import LocalMember
from mixserve.router.request import GenerateRequest, NotFoundError, RequestError
from mixserve.router.router import Router
from mixserve.router.snapshot import SessionStore, dump, load
from mixserve.router.session import Entry
from tests.fakes import FakeCore


def router(store):
    cores = {m: FakeCore(m) for m in ("a", "b")}
    return Router({m: LocalMember(c) for m, c in cores.items()}, {m: c.info() for m, c in cores.items()},
                  {"a": 0.5, "b": 0.5}, "me", store=store), cores


def run(r, **fields):
    return asyncio.run(r.generate(GenerateRequest(seed=4, **fields))).choices[0]


def test_snapshot_round_trip_is_compact():
    log = [Entry("a", i % 300, bytes([i % 256]), "t1") for i in range(1000)]
    blob = dump({"a": [1, 2, 3]}, log)
    assert load(blob) == ({"a": [1, 2, 3]}, log) and len(blob) < 16_000


def test_twenty_then_twenty_tokens_on_a_restarted_router_equal_forty_at_once():
    store = LocalMember(SessionStore())  # outlives the routers, as the named Ray actor does
    whole = run(router(store)[0], prompt="hi", max_tokens=40)
    first = run(router(store)[0], prompt="hi", max_tokens=20, session="chat-1")
    restarted, cores = router(store)  # a new router process: no sessions, no caches
    second = run(restarted, session="chat-1", max_tokens=20)
    assert first.token_ids + second.token_ids == whole.token_ids
    assert first.text + second.text == whole.text
    assert all(c.live_sessions() == 0 for c in cores.values())


def test_session_mistakes_are_clear():
    r, _ = router(LocalMember(SessionStore()))
    with pytest.raises(NotFoundError, match="unknown session 'nope'"):
        run(r, session="nope")
    run(r, prompt="hi", max_tokens=2, session="s")
    with pytest.raises(RequestError, match="exists: continue it without a prompt"):
        run(r, prompt="hi", session="s")
    with pytest.raises(RequestError, match="n must be 1"):
        run(r, session="s", n=2)

"""Sessions continue across requests and router restarts from msgpack snapshots of their log."""
import asyncio
import uuid

import pytest
import ray
import yaml

from mixserve.router.clients import LocalMember
from mixserve.router.request import GenerateRequest, NotFoundError, RequestError
from mixserve.serving.ensemble import build_ensemble
from mixserve.config import parse_config
from mixserve.router.snapshot import CAPACITY, STORE_ACTOR, SessionStore, dump, load
from mixserve.router.session_log import Entry
from tests.fakes import FakeCore, fake_router


def router(store):
    cores = {m: FakeCore(m) for m in ("a", "b")}
    return fake_router(cores, {"a": 0.5, "b": 0.5}, store=store), cores


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


def test_past_max_stored_sessions_the_oldest_named_session_is_refused(tiny_dir, ensemble):
    """Through the real store actor, which `ensemble` (another deployment, default capacity) started:
    the detached store outlives deployments, and a new one's max_stored_sessions applies to it."""
    raw = yaml.safe_load((tiny_dir / "ensemble.yaml").read_text())
    for m in raw["members"]:
        m["resources"] = {"num_cpus": 0.5}
    config = parse_config({**raw, "max_stored_sessions": 2}, tiny_dir)
    prompts = ["the sun", "a stone", "the river"]
    sessions = [f"{p.replace(' ', '-')}-{uuid.uuid4().hex}" for p in prompts]
    store = ray.get_actor(STORE_ACTOR, namespace="mixserve")
    try:
        with build_ensemble(config) as engine:
            whole = [engine.generate(prompt=p, max_tokens=16, seed=7).choices[0] for p in prompts]
            first = [engine.generate(prompt=p, max_tokens=8, seed=7, session=s).choices[0]
                     for p, s in zip(prompts, sessions)]
            with pytest.raises(NotFoundError, match=f"unknown session '{sessions[0]}'") as refused:
                engine.generate(session=sessions[0], max_tokens=8, seed=7)
            assert refused.value.status == 404
            for i in (1, 2):
                second = engine.generate(session=sessions[i], max_tokens=8, seed=7).choices[0]
                assert first[i].token_ids + second.token_ids == whole[i].token_ids
                assert first[i].text + second.text == whole[i].text
    finally:
        ray.get(store.resize.remote(CAPACITY))  # the suite's other deployments run with the default

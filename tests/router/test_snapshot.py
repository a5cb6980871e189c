"""Sessions continue across requests and router restarts from msgpack snapshots of their log."""
import asyncio
import time
import uuid

import pytest
import ray
import yaml

from mixserve.router.clients import LocalMember, RayMember
from mixserve.router.request import GenerateRequest, NotFoundError, RequestError
from mixserve.serving.ensemble import build_ensemble, session_store
from mixserve.config import parse_config
from mixserve.router.snapshot import CAPACITY, STORE_ACTOR, SessionStore, StoreUnavailableError, dump, load
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


class Silent:
    """A store whose process is alive but never answers (paused, hung)."""

    def call(self, method, *args):
        return asyncio.get_running_loop().create_future()


def test_a_store_that_does_not_answer_fails_the_request_within_member_retry_s():
    cores = {m: FakeCore(m) for m in ("a", "b")}
    r = fake_router(cores, {"a": 0.5, "b": 0.5}, store=Silent(), member_retry_s=0.5)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=r"session store did not answer within 0.5 s") as refused:
        run(r, prompt="hi", max_tokens=2, session="s")
    assert refused.value.status == 503 and refused.value.code == "session_store_unavailable"
    assert time.monotonic() - started < 0.5 + 10  # the bound, with room for a busy machine
    assert all(c.live_sessions() == 0 for c in cores.values())


def test_the_store_restarts_after_a_kill_and_a_request_meanwhile_is_served_or_refused_in_bound(ray_local):
    """Ray restarts the store's process; the snapshots were in its memory, so the sessions named
    before are unknown afterwards (docs/serving.md, "Sessions that continue"), and new ones continue."""
    retry_s = 10
    store = session_store(parse_config({"members": [{"name": "a", "model": "a"}]}, resolve_models=False))
    # member_retry_s bounds every call to the store, as it bounds a member's
    r = fake_router({m: FakeCore(m) for m in ("a", "b")}, {"a": 0.5, "b": 0.5}, store=RayMember(store),
                    member_retry_s=retry_s)
    before, during, after = (f"{when}-{uuid.uuid4().hex}" for when in ("before", "during", "after"))
    run(r, prompt="hi", max_tokens=4, session=before)
    ray.kill(store, no_restart=False)
    started = time.monotonic()
    try:
        served = run(r, prompt="hi", max_tokens=4, session=during)
    except StoreUnavailableError as e:  # Ray took longer than member_retry_s to bring it back
        assert e.status == 503
        served = None
    assert time.monotonic() - started < retry_s + 10
    ray.get(store.get.remote("probe"), timeout=120)  # back
    if served is not None:
        assert run(r, session=during, max_tokens=4).token_ids  # its snapshot went to the restarted store
    with pytest.raises(NotFoundError, match=f"unknown session '{before}'"):
        run(r, session=before, max_tokens=4)
    first = run(r, prompt="hi", max_tokens=4, session=after)
    second = run(r, session=after, max_tokens=4)
    assert first.token_ids + second.token_ids == run(r, prompt="hi", max_tokens=8).token_ids

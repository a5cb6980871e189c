"""Members crash for real (their processes SIGKILLed mid-run; Ray restarts them) and bounded memory
evicts caches; the router replays the log and the text does not change where the log is exact
(docs/architecture.md invariants 1, 6, 7)."""
import asyncio
import os
import signal
import time

import pytest
import ray
import yaml

from mixserve.serving.ensemble import build_ensemble
from mixserve.config import parse_config
from mixserve.router.request import GenerateRequest, UnavailableError
from mixserve.router.session_log import Chunk


def config(tiny_dir, member_extra=None, **extra):
    raw = yaml.safe_load((tiny_dir / "ensemble.yaml").read_text())
    for m in raw["members"]:
        m.update(resources={"num_cpus": 0.5}, **(member_extra or {}))
    return parse_config({**raw, **extra}, tiny_dir)


@pytest.fixture(scope="module")
def engine(tiny_dir, ray_local):
    """a and b share a tokenizer, c has its own; bit-exact whatever the batch. Each kill below takes
    a different member, so each restarts once (a member restarts 3 times at most)."""
    members = [{"name": m, "model": m, "batch_invariant": True, "resources": {"num_cpus": 0.25}} for m in "abc"]
    with build_ensemble(parse_config({"members": members, "member_retry_s": 120}, tiny_dir)) as e:
        yield e


def texts(result):
    return [c.text for c in result.choices]


def pid(engine, member):
    return ray.get(engine.actors[member].stats.remote(), timeout=60)["pid"]


def run_killing(engine, req, member):
    """Stream `req` and SIGKILL `member`'s process once every choice has streamed its first chunk:
    the kill lands with nearly the whole generation still to go, so sessions must be replayed into
    the restarted member (checked: its pid changed and the router counted replays into it).
    Returns the text each choice streamed before the kill and in all, and the final result."""
    victim, replays = pid(engine, member), engine.router.calls.replays[member]

    async def run():
        before, streamed, final = None, {}, None
        async for item in engine.router.stream(req):
            if isinstance(item, Chunk):
                streamed[item.index] = streamed.get(item.index, "") + item.text
                if before is None and len(streamed) == req.n:
                    os.kill(victim, signal.SIGKILL)
                    before = dict(streamed)
            final = item
        return before, streamed, final

    before, streamed, final = asyncio.run(run())
    assert engine.router.calls.replays[member] > replays, "the kill landed after the member's last call"
    assert pid(engine, member) != victim, "the member was not restarted"
    assert engine.live_sessions() == {"a": 0, "b": 0, "c": 0}
    return before, streamed, final


def test_killed_member_restarts_and_the_text_is_unchanged(engine):
    req = GenerateRequest(prompt="the river", max_tokens=120, seed=11, n=8, weights={"a": 1, "b": 1})
    expected = engine.generate(req)
    _, _, got = run_killing(engine, req, "a")
    assert texts(got) == texts(expected)


def test_member_killed_under_ce_restarts_and_the_text_is_unchanged(engine):
    """ce: every member computes every step, so every session waits for the killed one and replays."""
    req = GenerateRequest(prompt="the moon", max_tokens=60, seed=13, n=4, method="ce", weights={"a": 1, "b": 1})
    expected = engine.generate(req)
    _, _, got = run_killing(engine, req, "b")
    assert texts(got) == texts(expected) and got.method == "ce"


def test_member_killed_across_tokenizers_completes_and_the_sent_text_stands(engine):
    """a and c have different tokenizers: the replay sends c its own tokens as fixed ids and a's text
    re-tokenized per stretch, where c had built them up merging its last token with a's text, so its
    context, and so the rest of the text, can differ from the uncut run's (docs/deploy.md, "Failures").
    What holds: the request completes, the text up to the kill is the uncut run's, and everything
    streamed stands."""
    req = GenerateRequest(prompt="the river", max_tokens=80, seed=11, n=8, weights={"a": 1, "c": 1})
    expected = engine.generate(req)
    before, streamed, got = run_killing(engine, req, "c")
    for choice, uncut in zip(got.choices, expected.choices):
        sent = before[choice.index]
        assert uncut.text.startswith(sent) and choice.text.startswith(sent)
        assert choice.text == streamed[choice.index]
        assert choice.finish_reason == "stop" or (choice.finish_reason, len(choice.token_ids)) == ("length", 80)
    assert {m for c in got.choices for m in c.members} == {"a", "c"}


def test_member_that_stays_down_fails_with_503_and_single_on_the_other_works(tiny_dir, ray_local):
    with build_ensemble(config(tiny_dir, member_retry_s=2)) as engine:
        ray.kill(engine.actors["a"], no_restart=True)
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="member 'a' is unavailable"):
            engine.generate(prompt="the sun", max_tokens=50, seed=1)
        assert time.monotonic() - started < 20
        alone = engine.generate(prompt="the sun", max_tokens=10, seed=1, method="single", member="b")
        assert alone.choices[0].members == ["b"] * 10


def test_eviction_past_max_sessions_replays_and_changes_nothing(tiny_dir):
    req = GenerateRequest(prompt="a stone", max_tokens=40, seed=3, n=6)
    with build_ensemble(config(tiny_dir), in_process=True) as unbounded:
        expected = unbounded.generate(req)
    with build_ensemble(config(tiny_dir, {"max_sessions": 2}), in_process=True) as bounded:
        got = bounded.generate(req)
        assert sum(m.core.book.evictions for m in bounded.router.members.values()) > 0
        assert max(len(m.core.book.sessions) for m in bounded.router.members.values()) <= 2
    assert texts(got) == texts(expected)


def test_eviction_across_tokenizers_replays_and_changes_nothing(tiny_dir):
    """a and c tokenize apart; with one cached session per member every run replays the log. A
    member's own sampled tokens come back as its own, so that its last one merges with the text that
    follows as it did when it sampled it (sent back as fixed ids, 26 of 200 texts differed)."""
    raw = yaml.safe_load((tiny_dir / "hetero.yaml").read_text())
    req = GenerateRequest(prompt="a stone", max_tokens=60, seed=5, n=8)
    with build_ensemble(parse_config(raw, tiny_dir), in_process=True) as unbounded:
        expected = unbounded.generate(req)
    for m in raw["members"]:
        m["max_sessions"] = 1
    with build_ensemble(parse_config(raw, tiny_dir), in_process=True) as bounded:
        got = bounded.generate(req)
        assert sum(m.core.book.evictions for m in bounded.router.members.values()) > 0
    assert texts(got) == texts(expected)


def test_a_restarted_router_continues_a_session_from_its_snapshot(tiny_dir, ensemble):
    import uuid

    session = uuid.uuid4().hex
    whole = ensemble.generate(prompt="the sun", max_tokens=30, seed=9).choices[0]
    first = ensemble.generate(prompt="the sun", max_tokens=15, seed=9, session=session).choices[0]
    with build_ensemble(tiny_dir / "ensemble.yaml") as restarted:  # another router, other member actors
        second = restarted.generate(session=session, max_tokens=15, seed=9).choices[0]
    assert first.token_ids + second.token_ids == whole.token_ids and first.text + second.text == whole.text

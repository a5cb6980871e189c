"""Members crash for real (their processes killed through Ray) and bounded memory evicts caches; the
text never changes (docs/architecture.md invariants 1, 6, 7)."""
import asyncio
import time

import pytest
import ray
import yaml

from mixserve.api import build_engine
from mixserve.config import parse_config
from mixserve.router.request import GenerateRequest, UnavailableError


def config(tiny_dir, member_extra=None, **extra):
    raw = yaml.safe_load((tiny_dir / "ensemble.yaml").read_text())
    for m in raw["members"]:
        m.update(resources={"num_cpus": 0.5}, **(member_extra or {}))
    return parse_config({**raw, **extra}, tiny_dir)


@pytest.fixture()
def engine(tiny_dir, ray_local):
    with build_engine(config(tiny_dir, member_retry_s=60)) as e:
        yield e


def texts(result):
    return [c.text for c in result.choices]


def test_killed_member_restarts_and_the_text_is_unchanged(engine):
    req = GenerateRequest(prompt="the river", max_tokens=120, seed=11, n=8)
    expected = engine.generate(req)

    async def kill_after_first_chunk():
        killed = False
        async for item in engine.router.stream(req):
            if not killed:
                ray.kill(engine.actors["a"], no_restart=False)  # the process dies; Ray restarts it
                killed = True
        return item

    got = asyncio.run(kill_after_first_chunk())
    assert texts(got) == texts(expected)
    assert engine.live_sessions() == {"a": 0, "b": 0}


def test_member_that_stays_down_fails_with_503_and_single_on_the_other_works(tiny_dir, ray_local):
    with build_engine(config(tiny_dir, member_retry_s=2)) as engine:
        ray.kill(engine.actors["a"], no_restart=True)
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="member 'a' is unavailable"):
            engine.generate(prompt="the sun", max_tokens=50, seed=1)
        assert time.monotonic() - started < 20
        alone = engine.generate(prompt="the sun", max_tokens=10, seed=1, method="single", member="b")
        assert alone.choices[0].members == ["b"] * 10


def test_eviction_past_max_sessions_replays_and_changes_nothing(tiny_dir):
    req = GenerateRequest(prompt="a stone", max_tokens=40, seed=3, n=6)
    with build_engine(config(tiny_dir), in_process=True) as unbounded:
        expected = unbounded.generate(req)
    with build_engine(config(tiny_dir, {"max_sessions": 2}), in_process=True) as bounded:
        got = bounded.generate(req)
        assert sum(m.core.evictions for m in bounded.router.members.values()) > 0
        assert max(len(m.core.sessions) for m in bounded.router.members.values()) <= 2
    assert texts(got) == texts(expected)


def test_a_restarted_router_continues_a_session_from_its_snapshot(tiny_dir, ensemble):
    import uuid

    session = uuid.uuid4().hex
    whole = ensemble.generate(prompt="the sun", max_tokens=30, seed=9).choices[0]
    first = ensemble.generate(prompt="the sun", max_tokens=15, seed=9, session=session).choices[0]
    with build_engine(tiny_dir / "ensemble.yaml") as restarted:  # another router, other member actors
        second = restarted.generate(session=session, max_tokens=15, seed=9).choices[0]
    assert first.token_ids + second.token_ids == whole.token_ids and first.text + second.text == whole.text

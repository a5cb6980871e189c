"""The router recovers from members that lose sessions or go down (docs/architecture.md invariants 1 and 6)."""
import asyncio
import time

import pytest

from mixserve.router.clients import MemberDown
from mixserve.router.request import GenerateRequest, UnavailableError
from tests.fakes import FakeCore, fake_router


def build(retry_s=5.0):
    cores = {m: FakeCore(m) for m in ("a", "b")}
    return fake_router(cores, {"a": 0.5, "b": 0.5}, member_retry_s=retry_s), cores


def run(router, **fields):
    return asyncio.run(router.generate(GenerateRequest(prompt="p", max_tokens=60, seed=7, **fields)))


def test_a_member_that_forgets_sessions_gets_the_log_replayed_and_the_text_is_unchanged():
    router, cores = build()
    expected = run(router).choices[0]
    step = cores["a"].step
    calls = 0

    def forgetful(req):
        nonlocal calls
        calls += 1
        if calls % 2 == 0:
            cores["a"].sessions.clear()  # as an eviction or a restart would
        return step(req)

    cores["a"].step = forgetful
    got = run(router).choices[0]
    assert got.token_ids == expected.token_ids and got.text == expected.text
    replays = [delta for _, delta in cores["a"].received if delta and delta[0].ids[:1] == (ord("p"),)]
    assert len(replays) > 2  # the first contact, then replays from the prompt


def test_a_member_down_for_a_while_is_waited_for():
    router, cores = build()
    expected = run(router).choices[0].token_ids
    step = cores["b"].step
    failures = iter(range(3))

    def flaky(req):
        if next(failures, None) is not None:
            raise MemberDown("restarting")
        return step(req)

    cores["b"].step = flaky
    assert run(router).choices[0].token_ids == expected


def test_a_member_that_stays_down_fails_its_sessions_in_bounded_time_and_others_go_on():
    router, cores = build(retry_s=0.3)

    def dead(req):
        raise MemberDown("actor died")

    cores["b"].step = dead
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="member 'b' is unavailable") as e:
        run(router)
    assert e.value.status == 503 and time.monotonic() - started < 3
    assert run(router, method="single", member="a").choices[0].finish_reason == "length"
    assert cores["a"].live_sessions() == 0


def test_a_member_back_just_before_the_bound_still_serves_the_request(monkeypatch):
    """The last try is at member_retry_s itself. On a fake clock: the member is down until 5.75 s of a
    6 s bound, after the backoff's last full step (tries at 4.55 and 5.55 s, the next 1 s step past
    the bound)."""
    from mixserve.router import calls as calls_module

    now = [0.0]

    async def sleep(seconds):
        now[0] += seconds

    monkeypatch.setattr(calls_module.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(calls_module.asyncio, "sleep", sleep)
    router, _ = build(retry_s=6.0)
    tries = []

    async def attempt():
        tries.append(now[0])
        if now[0] < 5.75:
            raise MemberDown("restarting")
        return "served"

    assert asyncio.run(router.calls.retrying("a", attempt)) == "served"
    assert tries[-1] == pytest.approx(6.0)  # not given up at 5.55 s with the member back at 5.75

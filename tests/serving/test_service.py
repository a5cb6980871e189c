"""The protocol-neutral ingress layer: admission, auth and health, on fake members."""
import asyncio

import pytest

from mixserve.serving.admission import OverloadedError
from mixserve.router.clients import MemberDown
from mixserve.router.request import GenerateRequest
from mixserve.serving.service import EnsembleService, UnauthorizedError
from tests.fakes import FakeCore, fake_router


@pytest.fixture()
def service(monkeypatch):
    monkeypatch.setenv("SERVICE_TEST_KEY", "k1")
    cores = {m: FakeCore(m) for m in ("a", "b")}
    router = fake_router(cores, {"a": 1, "b": 1}, max_concurrent_sessions=4, api_key_env="SERVICE_TEST_KEY")
    return EnsembleService(router), cores


def test_health_is_degraded_while_a_member_does_not_answer(service):
    svc, cores = service
    assert asyncio.run(svc.live_sessions()) == {"a": 0, "b": 0}

    def down():
        raise MemberDown("gone")

    cores["b"].live_sessions = down
    assert asyncio.run(svc.live_sessions()) is None


def test_admission_refuses_past_the_limit_and_frees_slots_afterwards(service):
    svc, _ = service
    with pytest.raises(OverloadedError, match="limit of 4 concurrent sessions"):
        asyncio.run(svc.generate(svc.validate(GenerateRequest(prompt="x", n=5))))
    done = asyncio.run(svc.generate(svc.validate(GenerateRequest(prompt="x", n=4, max_tokens=3))))
    assert done.usage.completion_tokens == 12
    assert svc.admission.active == 0


def test_a_request_is_checked_once_on_its_way_through(service, monkeypatch):
    """The ingress checks the request (for its status code and admission) and the router runs the
    plan as it is: nothing checks it again."""
    import mixserve.router.router as router_module

    svc, _ = service
    calls = []
    real = router_module.validate
    monkeypatch.setattr(router_module, "validate", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    plan = svc.validate(GenerateRequest(prompt="x", max_tokens=3, seed=1, model="b"))
    result = asyncio.run(svc.generate(plan))
    assert calls == [1] and result.method == "single" and result.choices[0].members == ["b"] * 3


def test_a_missing_or_wrong_key_is_refused_saying_how_to_send_it(service):
    svc, _ = service
    svc.authorize("Bearer k1")
    for bad in (None, "", "Bearer k2", "k1x"):
        with pytest.raises(UnauthorizedError, match="Authorization: Bearer"):
            svc.authorize(bad)

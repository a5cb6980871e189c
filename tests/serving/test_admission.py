"""Admission counts work, and every request has a deadline (mixserve/serving/admission.py and
service.py): a request with a large n and a reader that stops reading takes the server for
request_timeout_s at most, then its sessions and slots are free and it ends with 504 / an error event /
DEADLINE_EXCEEDED. On fake members, then through the served app over HTTP and gRPC."""
import asyncio
import json
import time

import grpc
import pytest
import requests

from mixserve.proto import pb2, pb2_grpc
from mixserve.router.request import GenerateRequest
from mixserve.serving.admission import OverloadedError, work
from mixserve.serving.service import CHUNKS_AHEAD, DeadlineError, EnsembleService
from tests.conftest import _deploy
from tests.fakes import FakeCore, fake_router

DEADLINE_S = 2.0
SLACK_S = 20.0  # past the deadline, for a busy 2-core machine: the check is that it ends, not how fast


def test_work_is_n_times_prompt_and_max_tokens():
    router = fake_router({"a": FakeCore("a")}, {"a": 1})
    plan = router.validate
    assert work(plan(GenerateRequest(prompt=[5, 6, 7], max_tokens=10, n=4))) == 4 * (3 + 10)
    assert work(plan(GenerateRequest(prompt="héllo", max_tokens=10))) == 6 + 10  # UTF-8 bytes
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert work(plan(GenerateRequest(messages=chat, max_tokens=10, n=2))) == 2 * (8 + 2 + 10)
    assert work(plan(GenerateRequest(session="s", max_tokens=10))) == 10  # its log is in its snapshot


def test_an_n_64_request_whose_reader_stops_holds_the_server_until_its_deadline_only():
    cores = {m: FakeCore(m) for m in ("a", "b")}
    slow_work = 64 * (len("the sun") + 50)
    router = fake_router(cores, {"a": 1, "b": 1}, max_concurrent_sessions=128,
                         max_concurrent_tokens=slow_work + 100, request_timeout_s=DEADLINE_S)
    svc = EnsembleService(router)
    other = GenerateRequest(prompt="x", max_tokens=400, seed=1)

    async def scenario():
        started = time.monotonic()
        slow = svc.stream(svc.validate(GenerateRequest(prompt="the sun", n=64, max_tokens=50, seed=3)))
        await slow.__anext__()  # the first chunk, then the reader stops reading
        with pytest.raises(OverloadedError, match="limit of .* concurrent tokens"):
            await svc.generate(svc.validate(other))  # sessions are left (64 of 128): the work is not
        while svc.admission.active or svc.admission.tokens:
            assert time.monotonic() - started < DEADLINE_S + SLACK_S
            await asyncio.sleep(0.02)  # polling the admission itself, with a bound
        freed = time.monotonic() - started
        served = await svc.generate(svc.validate(other))
        rest = []
        with pytest.raises(DeadlineError) as ended:
            async for item in slow:
                rest.append(item)
        return freed, served, rest, ended.value

    freed, served, rest, ended = asyncio.run(scenario())
    assert DEADLINE_S <= freed < DEADLINE_S + SLACK_S
    assert served.usage.completion_tokens == 400
    assert len(rest) <= CHUNKS_AHEAD  # what was sent ahead of the reader, then the error
    assert ended.status == 504 and "request_timeout_s (2 s)" in str(ended)
    assert all(c.live_sessions() == 0 for c in cores.values())


@pytest.fixture(scope="module")
def app(tiny_dir, serve_instance):
    from ray import serve

    members = [{"name": "d", "model": "a", "resources": {"num_cpus": 0.25}}]
    yield _deploy(tiny_dir, serve_instance, "deadline", "/deadline",
                  {"members": members, "model_name": "deadline", "request_timeout_s": DEADLINE_S})
    serve.delete("deadline")  # its member's CPU back to the session's other ensembles


# 64 samples to near the member's context (1,024 tokens): far longer than the deadline, whoever reads.
LONG = {"prompt": "the moon", "n": 64, "max_tokens": 1000, "seed": 5}


def health(app) -> dict:
    return requests.get(app.http + "/health", timeout=10).json()


def test_past_its_deadline_a_request_gets_504_over_http_and_deadline_exceeded_over_grpc(app):
    started = time.monotonic()
    reply = requests.post(app.http + "/v1/completions", json=LONG, timeout=120)
    assert reply.status_code == 504, reply.text
    error = reply.json()["error"]
    assert error["code"] == "request_timeout" and error["type"] == "server_error"
    assert DEADLINE_S <= time.monotonic() - started < DEADLINE_S + SLACK_S
    with grpc.insecure_channel(app.grpc) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        sampling = pb2.SamplingParams(max_tokens=LONG["max_tokens"], seed=LONG["seed"])
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:  # the client's own deadline is far later: this is the server's
            list(pb2_grpc.EnsembleStub(channel).Generate(
                pb2.GenerateRequest(prompt=LONG["prompt"], n=LONG["n"], sampling=sampling), timeout=120))
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "request_timeout_s" in e.value.details()
        assert DEADLINE_S <= time.monotonic() - started < DEADLINE_S + SLACK_S
    assert health(app)["active_sessions"] == 0


def test_a_stream_nobody_reads_frees_its_slots_at_its_deadline_and_ends_with_an_error_event(app):
    url = app.http + "/v1/completions"
    with requests.post(url, json={**LONG, "stream": True}, stream=True, timeout=60) as slow:
        assert slow.status_code == 200  # the stream has begun (its first chunk is made); nobody reads it
        started = time.monotonic()
        while health(app)["active_sessions"]:
            assert time.monotonic() - started < DEADLINE_S + SLACK_S
            time.sleep(0.05)  # polling the server's own count, with a bound
        other = requests.post(url, json={"prompt": "x", "max_tokens": 4}, timeout=60)
        assert other.status_code == 200 and other.json()["usage"]["completion_tokens"] == 4
        lines = [line for line in slow.iter_lines() if line]
    assert lines[-1] == b"data: [DONE]"
    events = [json.loads(line.removeprefix(b"data: ")) for line in lines[:-1]]
    assert events[-1]["error"]["code"] == "request_timeout"
    assert all("error" not in e for e in events[:-1])
    while any((live := health(app)["live_sessions"]).values()):
        assert time.monotonic() - started < DEADLINE_S + 2 * SLACK_S, live
        time.sleep(0.05)

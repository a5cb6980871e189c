"""The served app over gRPC through a stub generated from proto/mixserve.proto, on loopback."""
import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import grpc
import pytest
import ray
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mixserve.proto import SERVICE, pb2, pb2_grpc
from mixserve.serving.grpc_service import EnsembleServicer
from mixserve.serving.service import EnsembleService


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch


def request(**kw):
    sampling = pb2.SamplingParams(**{k: kw.pop(k) for k in list(kw) if k in ("max_tokens", "seed", "temperature")})
    return pb2.GenerateRequest(sampling=sampling, **kw)


def test_generate_streams_chunks_then_usage(channel):
    chunks = list(pb2_grpc.EnsembleStub(channel).Generate(request(prompt="the cat", max_tokens=12, seed=3),
                                                         timeout=60))
    *text_chunks, last = chunks
    assert last.usage.completion_tokens == 12 and last.method == "me"
    assert set(last.weights) == {"a", "b", "c"} and sum(last.weights.values()) == pytest.approx(1)
    assert sum(len(c.token_ids) for c in text_chunks) == 12 and text_chunks[-1].finish_reason == "length"
    assert {c.member for c in text_chunks} <= {"a", "b", "c"}


def test_same_seed_same_text_over_http_grpc_and_the_cli(channel, server):
    stub = pb2_grpc.EnsembleStub(channel)
    grpc_text = "".join(c.text for c in stub.Generate(request(prompt="a river", max_tokens=16, seed=21), timeout=60))
    http = requests.post(server.http + "/v1/completions", timeout=60,
                         json={"prompt": "a river", "max_tokens": 16, "seed": 21}).json()
    # Two samples: the first has the request's seed (the text above), the second seed + 1.
    cli = subprocess.run([sys.executable, "-m", "mixserve", "generate", "--config", server.config_path, "--prompt",
                          "a river", "--max-tokens", "16", "--seed", "21", "--n", "2", "--json"],
                         capture_output=True, text=True, timeout=180, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert cli.returncode == 0, cli.stderr
    result = json.loads(cli.stdout)
    assert grpc_text == http["choices"][0]["text"] == result["choices"][0]["text"]
    # ... and the CLI's JSON has the documented shape
    assert result["method"] == "me" and result["seed"] == 21 and set(result["prompt_token_ids"]) == {"a", "b", "c"}
    assert set(result["weights"]) == {"a", "b", "c"}  # the weights it used
    assert set(result["usage"]) >= {"prompt_tokens", "completion_tokens", "member_forward_calls"}
    assert "total_s" in result["timing"]
    for choice in result["choices"]:
        assert set(choice) == {"text", "token_ids", "members", "finish_reason"}
        assert 0 < len(choice["token_ids"]) == len(choice["members"]) <= 16
        assert choice["finish_reason"] in ("stop", "length")
    assert result["choices"][0]["token_ids"] != result["choices"][1]["token_ids"]


def test_errors_map_to_status_codes(channel):
    stub = pb2_grpc.EnsembleStub(channel)
    raw = channel.unary_stream(f"/{SERVICE}/Generate", request_serializer=bytes,
                               response_deserializer=pb2.GenerateChunk.FromString)
    cases = [(stub.Generate, request(prompt=""), grpc.StatusCode.INVALID_ARGUMENT, "exactly one of prompt or messages"),
             (stub.Generate, request(prompt="x", model="nope"), grpc.StatusCode.NOT_FOUND, "does not exist"),
             (stub.Generate, request(prompt="x", temperature=-1), grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
             (stub.Generate, request(prompt="x", n=10_000), grpc.StatusCode.RESOURCE_EXHAUSTED, "concurrent sessions"),
             # issue 28's inputs, where gRPC has the field
             (stub.Generate, request(prompt="x", temperature=1e-310), grpc.StatusCode.INVALID_ARGUMENT,
              "0 (greedy) or between 0.01"),
             (stub.Generate, pb2.GenerateRequest(prompt="x", sampling=pb2.SamplingParams(stop=["x" * 1_000_000] * 3)),
              grpc.StatusCode.INVALID_ARGUMENT, "at most 256 bytes each"),
             (stub.Generate, request(prompt="x" * (4 << 20)), grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"),
             (raw, b"\x0a\x04h\xed\xa0\x80", grpc.StatusCode.INVALID_ARGUMENT, "String field had bad UTF-8")]
    for call, req, code, message in cases:
        with pytest.raises(grpc.RpcError) as e:
            list(call(req, timeout=30))
        assert e.value.code() == code and message in e.value.details()
        assert list(stub.Generate(request(prompt="the sky", max_tokens=2, seed=0), timeout=60))[-1].usage


def test_weights_near_the_float_maximum_sample_the_mixture_asked_for(channel):
    def generate(weights):
        return list(pb2_grpc.EnsembleStub(channel).Generate(
            request(prompt="the sky", method="ce", weights=weights, max_tokens=4, seed=0), timeout=60))

    huge = generate({"a": 1e308, "b": 1e308})
    assert dict(huge[-1].weights) == {"a": 0.5, "b": 0.5}
    assert "".join(c.text for c in huge) == "".join(c.text for c in generate({"a": 1, "b": 1}))


def test_a_cancelled_generate_frees_every_member_at_once(ensemble):
    """What gRPC does when its client cancels: it cancels the handler's task, wherever that awaits.
    The handler runs on gRPC's loop and the request on the router's (mixserve/serving/grpc_service.py), as in
    the server; the request's two samples then end at once, and their sessions are freed on every
    member."""
    home = asyncio.new_event_loop()
    thread = threading.Thread(target=home.run_forever, daemon=True)
    thread.start()
    servicer = EnsembleServicer(EnsembleService(ensemble.router), home)

    class Context:  # the servicer context's part that Generate uses
        def __init__(self):
            self.chunks = asyncio.Queue()

        def invocation_metadata(self):
            return ()

        async def write(self, chunk):
            self.chunks.put_nowait(chunk)

    def rows():  # rows the members' forwards computed
        return sum(ray.get(ensemble.actors[m].stats.remote(), timeout=30)["rows"] for m in "ab")

    async def live():
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(ensemble.router.live_sessions(), home))

    async def cancel_after_the_first_chunk():
        """Checked while gRPC's loop still runs: a request left going would go on there."""
        context = Context()
        before = rows()
        handler = asyncio.create_task(servicer.Generate(request(prompt="the moon", max_tokens=1000, seed=2, n=2),
                                                        context))
        first = await asyncio.wait_for(context.chunks.get(), 60)
        handler.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(handler, 10)
        deadline = time.monotonic() + 10.0
        while any((held := await live()).values()):
            assert time.monotonic() < deadline, held
            await asyncio.sleep(0.02)
        return first, rows() - before

    try:
        first, computed = asyncio.run(cancel_after_the_first_chunk())
    finally:
        home.call_soon_threadsafe(home.stop)
        thread.join(10)
        home.close()
    assert first.text
    # Uncancelled, the request computes over 1000 rows (one sample runs all its 1000 tokens, the other 55).
    assert computed < 500


def test_cancel_mid_stream_ends_the_call_and_frees_every_member(channel, server):
    """End to end, through Serve. How soon the sessions are freed is measured, not asserted
    (docs/serving.md, "Errors": almost always within 0.04 s, once in 30 tries 1.2 s), so the bound
    is the request's own end: what this catches is a session held after it."""
    call = pb2_grpc.EnsembleStub(channel).Generate(request(prompt="the moon", max_tokens=1000, seed=2, n=2),
                                                   timeout=120)
    next(call)
    call.cancel()
    with pytest.raises(grpc.RpcError) as e:
        list(call)
    assert e.value.code() == grpc.StatusCode.CANCELLED
    deadline = time.monotonic() + 60.0  # both samples' 1000 tokens take about 4 s here
    while any((live := requests.get(server.http + "/health", timeout=5).json()["live_sessions"]).values()):
        assert time.monotonic() < deadline, live
        time.sleep(0.05)


def test_health_reflection_and_models(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        assert health.Check(health_pb2.HealthCheckRequest(service=name)).status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    assert SERVICE in {s.name for s in answer.list_services_response.service}
    models = pb2_grpc.EnsembleStub(channel).ListModels(pb2.ListModelsRequest())
    assert [m.id for m in models.models] == ["mixserve", "a", "b", "c"]
    tokenizer = {m.id: m.tokenizer for m in models.models}
    assert tokenizer["a"] == tokenizer["b"] != tokenizer["c"] and tokenizer["mixserve"] == ""


def test_api_key_is_required_as_metadata(secure_server):
    with grpc.insecure_channel(secure_server.grpc) as ch:
        stub = pb2_grpc.EnsembleStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Generate(request(prompt="x", max_tokens=2), timeout=30))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = list(stub.Generate(request(prompt="x", max_tokens=2), metadata=[("authorization", "Bearer sesame")],
                                timeout=30))
        assert ok[-1].usage.completion_tokens == 2

"""The gRPC Generate fuzzed over the fields of proto/mixserve.proto's GenerateRequest (hypothesis, seeded),
and over raw bytes that may not decode at all: bad input is INVALID_ARGUMENT, NOT_FOUND or
RESOURCE_EXHAUSTED, never INTERNAL or UNKNOWN, and a normal request is served afterwards. The server
runs in this process (mixserve/serving/grpc_service.py's start_grpc) over fake members."""
import asyncio
import threading

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixserve.proto import SERVICE, pb2, pb2_grpc
from mixserve.serving.grpc_service import start_grpc
from mixserve.serving.service import EnsembleService
from tests.conftest import free_port
from tests.fakes import FakeCore, fake_router

REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED}
SESSIONS = 4
FUZZ = settings(max_examples=250, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def channel():
    home = asyncio.new_event_loop()  # the router's loop, as the ingress replica's
    thread = threading.Thread(target=home.run_forever, daemon=True)
    thread.start()
    router = fake_router({m: FakeCore(m, eos_weight=0.05) for m in "ab"}, {"a": 1, "b": 1},
                         max_concurrent_sessions=SESSIONS, max_body_bytes=1 << 16)
    port = free_port()
    # Held while the tests run: a grpc.aio.Server that is collected shuts down.
    server = asyncio.run_coroutine_threadsafe(start_grpc(EnsembleService(router), "127.0.0.1", port),
                                              home).result(60)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch
    del server
    home.call_soon_threadsafe(home.stop)
    thread.join(10)


def sampling(numbers, counts, texts):
    return st.fixed_dictionaries({}, optional={
        "temperature": numbers, "top_p": numbers, "top_k": st.integers(0, 2**32 - 1), "max_tokens": counts,
        "stop": st.lists(texts, max_size=6), "seed": st.integers(0, 2**64 - 1)}).map(lambda f: pb2.SamplingParams(**f))


def messages(roles, texts):
    return st.lists(st.builds(pb2.ChatMessage, role=roles, content=texts), min_size=1, max_size=3)


# Tame requests have a prompt or a chat, name the ensemble's models and members and keep in range,
# so that many generate; wild ones take any value a field can hold. Both keep to a few tokens and
# samples, or else go past the limits: the range between costs time, not coverage
# (tests/router/test_request.py checks its edges).
words = st.text(min_size=1, max_size=12)
TAME = st.tuples(st.builds(lambda prompt: {"prompt": prompt}, words) | st.builds(
    lambda chat: {"messages": chat}, messages(st.sampled_from(["system", "user", "assistant"]), words)),
    st.fixed_dictionaries({}, optional={
        "model": st.sampled_from(["mixserve", "a", "b"]), "method": st.sampled_from(["me", "ce", "single"]),
        "member": st.sampled_from(["a", "b"]), "weights": st.dictionaries(st.sampled_from("ab"), st.floats(0, 1e308)),
        "n": st.integers(0, 3), "token_healing": st.booleans(), "session": words,
        "sampling": sampling(st.floats(0.01, 2.0) | st.sampled_from([0.0, 1e-310, 1.0]), st.integers(0, 8), words)})
).map(lambda parts: {**parts[0], **parts[1]})
anything = st.text(max_size=300)
WILD = st.fixed_dictionaries({}, optional={
    "prompt": anything, "messages": messages(anything, anything), "model": anything, "method": anything,
    "member": anything, "session": anything, "n": st.integers(0, 3) | st.integers(SESSIONS + 1, 2**32 - 1),
    "weights": st.dictionaries(anything, st.floats(allow_nan=True, allow_infinity=True), max_size=3),
    "token_healing": st.booleans(),
    "sampling": sampling(st.floats(allow_nan=True, allow_infinity=True),
                         st.integers(0, 8) | st.integers(4097, 2**32 - 1), anything)})
requests = (TAME | WILD).map(lambda fields: pb2.GenerateRequest(**fields))


def generate(channel, request) -> grpc.StatusCode:
    stub = pb2_grpc.EnsembleStub(channel)
    try:
        chunks = list(stub.Generate(request, timeout=60))
    except grpc.RpcError as e:
        return e.code()
    assert chunks[-1].HasField("usage")
    return grpc.StatusCode.OK


def test_no_request_gets_an_internal_error(channel):
    @FUZZ
    @given(request=requests)
    def fuzz(request):
        code = generate(channel, request)
        assert code is grpc.StatusCode.OK or code in REFUSALS, (code, request)

    fuzz()
    assert generate(channel, pb2.GenerateRequest(prompt="after", sampling=pb2.SamplingParams(max_tokens=4))) \
        is grpc.StatusCode.OK


def test_bytes_that_do_not_decode_are_invalid_arguments(channel):
    raw = channel.unary_stream(f"/{SERVICE}/Generate", request_serializer=bytes,
                               response_deserializer=pb2.GenerateChunk.FromString)

    @FUZZ
    @given(data=st.binary(max_size=64) | st.sampled_from([b"\x0a\x04h\xed\xa0\x80"]))  # a prompt of a lone surrogate
    def fuzz(data):
        try:
            list(raw(data, timeout=60))
        except grpc.RpcError as e:
            assert e.code() in REFUSALS, (e.code(), e.details(), data)

    fuzz()
    assert generate(channel, pb2.GenerateRequest(prompt="after", sampling=pb2.SamplingParams(max_tokens=4))) \
        is grpc.StatusCode.OK

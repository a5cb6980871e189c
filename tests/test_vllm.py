"""Members on vLLM (engine: vllm, docs/architecture.md "Engines"): the same router, log and exactness
over the field's engine, through Ray actors on CPU. One ensemble serves most tests here: a and b on
vLLM (one shared tokenizer), c on the transformers engine with a tokenizer of its own."""
import asyncio
import time

import pytest
import ray
import requests

from mixserve.actors.loading import resolve
from mixserve.actors.member import MemberCore
from mixserve.actors.messages import SamplingParams, Segment, StepRequest
from mixserve.api import build_engine
from mixserve.config import parse_config
from mixserve.router.request import GenerateRequest
from mixserve.router.session import Chunk
from mixserve.tiny import WORDS
from tests.conftest import _deploy
from tests.exact import outcome_probs, p_value, two_token_tables

N = 2000
PROMPT = "the cat"
ALPHA = 1e-9  # a correct sampler fails with this probability for a random seed; the seed is fixed
# A quarter CPU each: the session's other ensembles hold most of the test Ray's 8 logical CPUs.
VLLM = {"engine": "vllm", "resources": {"num_cpus": 0.25}, "engine_options": {"kv_cache_space_gib": 0.25}}


@pytest.fixture(scope="module")
def ens(tiny_dir, ray_local):
    members = [{"name": m, "model": m, **VLLM} for m in "ab"]
    members.append({"name": "c", "model": "c", "resources": {"num_cpus": 0.25}})
    config = parse_config({"members": members, "default_member": "a", "member_retry_s": 120}, tiny_dir)
    with build_engine(config) as engine:
        yield engine


def texts(result):
    return [c.text for c in result.choices]


def test_single_on_vllm_decodes_what_the_transformers_engine_decodes(ens, tiny_dir):
    computed = ray.get(ens.actors["b"].stats.remote(), timeout=30)["compute_s"]
    greedy = ens.generate(prompt="the moon", max_tokens=24, temperature=0, seed=0, method="single", member="b")
    core = MemberCore("b", resolve(str(tiny_dir / "b")))
    ids = core.prompt_ids("the moon")
    reference = core.step(StepRequest("r", (Segment(tuple(ids)),), 0, 24, SamplingParams(temperature=0), fresh=True))
    assert greedy.choices[0].token_ids == reference.tokens and greedy.choices[0].members == ["b"] * 24
    assert ray.get(ens.actors["b"].stats.remote(), timeout=30)["compute_s"] > computed  # vLLM's steps, timed


@pytest.mark.parametrize("method", ["me", "ce"])
def test_me_and_ce_on_vllm_sample_the_exact_mixture(ens, tiny_dir, method):
    exact = outcome_probs([two_token_tables(tiny_dir / m, PROMPT) for m in "ab"], [0.5, 0.5], eos=0)
    # ce asks each member for a whole row per step: half the samples keep this file's time in bounds.
    n = N if method == "me" else N // 2
    result = ens.generate(prompt=PROMPT, max_tokens=2, n=n, seed=20261125, method=method, weights={"a": 1, "b": 1})
    assert p_value([tuple(c.token_ids) for c in result.choices], exact) > ALPHA


def test_a_request_repeats_exactly_with_its_seed(ens):
    req = dict(prompt="the river", max_tokens=40, seed=5, n=3, weights={"a": 1, "b": 1})
    first = ens.generate(**req)
    assert texts(first) == texts(ens.generate(**req))
    assert {m for c in first.choices for m in c.members} == {"a", "b"}


def test_streamed_chunks_join_to_the_text_and_stop_cuts_it(ens):
    req = GenerateRequest(prompt="a dog", max_tokens=40, seed=8, n=2, weights={"a": 1, "b": 1})

    async def collect():
        chunks, final = [], None
        async for item in ens.router.stream(req):
            (chunks.append(item) if isinstance(item, Chunk) else None)
            final = item
        return chunks, final

    chunks, final = asyncio.run(collect())
    for choice in final.choices:
        mine = [c for c in chunks if c.index == choice.index]
        assert len(mine) > 1 and "".join(c.text for c in mine) == choice.text
    text = final.choices[0].text
    # An ASCII word the text holds after its start (random members write much partial UTF-8).
    stop = min((w for w in WORDS if text.find(w) > 0), key=text.find)
    cut = ens.generate(prompt="a dog", max_tokens=40, seed=8, n=1, weights={"a": 1, "b": 1}, stop=(stop,))
    assert cut.choices[0].text == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_release_leaves_no_request_running_in_vllm(ens):
    async def abandon():
        stream = ens.router.stream(GenerateRequest(prompt="the sun", max_tokens=400, seed=2, n=4,
                                                   weights={"a": 1, "b": 1}))
        await anext(stream)  # the first chunk: runs are going on both members
        await stream.aclose()  # the client went away

    asyncio.run(abandon())
    assert ens.live_sessions()["a"] == 0 and ens.live_sessions()["b"] == 0
    # A run whose reader Ray cancelled is aborted at the member loop's next engine step: wait for that
    # (polling the engine itself, with a bound), and for nothing else.
    deadline = time.monotonic() + 10
    while (running := [ray.get(ens.actors[m].stats.remote(), timeout=30)["running"] for m in "ab"]) != [0, 0] \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running == [0, 0]


def test_a_vllm_member_and_a_transformers_member_with_another_tokenizer(ens):
    result = ens.generate(prompt="the tree", max_tokens=30, seed=4, weights={"a": 1, "c": 1})
    choice = result.choices[0]
    assert {m for m, _ in choice.stretches} == {"a", "c"}  # both wrote, each reading the other's text
    assert "".join(t for _, t in choice.stretches) == choice.text
    assert texts(result) == texts(ens.generate(prompt="the tree", max_tokens=30, seed=4, weights={"a": 1, "c": 1}))


def test_token_healing_on_a_vllm_member_writes_what_the_transformers_engine_writes(ens, hetero):
    """a heals after c's text (their tokenizers differ), on vLLM through allowed_token_ids; greedy, the
    same as a on the transformers engine (the hetero ensemble: a and c, equal weights)."""
    kwargs = dict(prompt="the tree", max_tokens=40, seed=4, n=8, temperature=0, weights={"a": 1, "c": 1},
                  token_healing=True)
    on_vllm, on_transformers = ens.generate(**kwargs).choices, hetero.generate(**kwargs).choices
    assert all({m for m, _ in c.stretches} == {"a", "c"} for c in on_vllm)
    assert [(c.text, c.members) for c in on_vllm] == [(c.text, c.members) for c in on_transformers]


def test_killed_vllm_member_restarts_and_the_sent_text_stands(ens):
    """On vLLM a run's draws are seeded from its first step, so a run cut by a crash and replayed
    continues differently from the uncut run: what was sent stays, and the request completes."""
    req = GenerateRequest(prompt="the stone", max_tokens=60, seed=12, n=2, weights={"a": 1, "b": 1})

    async def kill_after_first_chunk():
        sent, final = {}, None
        async for item in ens.router.stream(req):
            if isinstance(item, Chunk):
                if not sent:
                    ray.kill(ens.actors["a"], no_restart=False)  # the process dies; Ray restarts it
                sent[item.index] = sent.get(item.index, "") + item.text
            final = item
        return sent, final

    sent, final = asyncio.run(kill_after_first_chunk())
    for choice in final.choices:
        assert choice.text == sent[choice.index] and len(choice.token_ids) == 60
    assert ens.live_sessions()["a"] == 0


def test_http_and_grpc_serve_vllm_members_unchanged(tiny_dir, serve_instance):
    from ray import serve

    members = [{"name": "a", "model": "a", **VLLM}, {"name": "bt", "model": "b", "resources": {"num_cpus": 0.25}}]
    server = _deploy(tiny_dir, serve_instance, "vllm", "/vllm", {"members": members, "model_name": "vllm-pair"})
    try:
        _http_and_grpc(server)
    finally:
        serve.delete("vllm")  # its members' CPUs back to the session's other ensembles


def _http_and_grpc(server):
    import grpc

    from mixserve.proto import pb2, pb2_grpc

    body = {"model": "vllm-pair", "prompt": "the cat", "max_tokens": 12, "seed": 3}
    reply = requests.post(server.http + "/v1/completions", json=body, timeout=120).json()
    assert reply["usage"]["completion_tokens"] == 12 and set(reply["usage"]["member_tokens"]) <= {"a", "bt"}
    with grpc.insecure_channel(server.grpc) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        sampling = pb2.SamplingParams(max_tokens=12, seed=3)
        chunks = list(pb2_grpc.EnsembleStub(channel).Generate(pb2.GenerateRequest(prompt="the cat", sampling=sampling),
                                                             timeout=120))
    assert "".join(c.text for c in chunks[:-1]) == reply["choices"][0]["text"]

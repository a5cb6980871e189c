"""Members on vLLM (engine: vllm, docs/architecture.md "Engines"): the same router, log and exactness
over the field's engine, through Ray actors on CPU. One ensemble serves most tests here: a and b on
vLLM (one shared tokenizer), c on the transformers engine with a tokenizer of its own."""
import asyncio
import json
import os
import random
import signal
import time
from contextlib import aclosing

import pytest
import ray
import requests

from mixserve.references import resolve
from mixserve.actors.member import MemberCore
from mixserve.actors.messages import SamplingParams, Segment, StepRequest
from mixserve.serving.ensemble import build_ensemble
from mixserve.config import parse_config
from mixserve.router.request import GenerateRequest
from mixserve.router.session_log import Chunk
from mixserve.models.tiny import WORDS
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
    with build_ensemble(config) as engine:
        yield engine


def texts(result):
    return [c.text for c in result.choices]


def pid(engine, member):
    return ray.get(engine.actors[member].stats.remote(), timeout=60)["pid"]


async def text_of(engine, req, stream):
    """Each choice's text: joined from the streamed chunks, or from the whole reply."""
    if not stream:
        return texts(await engine.router.generate(req))
    parts = {}
    async for item in engine.router.stream(req):
        if isinstance(item, Chunk):
            parts[item.index] = parts.get(item.index, "") + item.text
    return [parts.get(i, "") for i in range(req.n)]


async def abandon(engine, req):
    """A client that goes away after the first chunk."""
    async with aclosing(engine.router.stream(req)) as stream:
        await anext(stream)


def crowd(count, seed, **fields):
    """`count` requests with distinct prompts and seeds."""
    rng = random.Random(seed)
    return [GenerateRequest(prompt=" ".join(rng.sample(WORDS, 2)), seed=rng.randrange(1 << 30), **fields)
            for _ in range(count)]


def steps(engine, members):
    """vLLM engine steps the members have run (each samples one token per running request)."""
    return sum(ray.get(engine.actors[m].stats.remote(), timeout=30)["steps"] for m in members)


def shared_steps(engine, members):
    """vLLM engine steps the members have run that advanced two or more requests at once."""
    return sum(ray.get(engine.actors[m].stats.remote(), timeout=30)["shared_steps"] for m in members)


def wait_idle(engine, members, within_s=10.0):
    """No session held and no vLLM request running on `members`, polled with a bound (a run whose
    reader went away is aborted at the member loop's next engine step)."""
    deadline = time.monotonic() + within_s
    while True:
        state = {m: (ray.get(engine.actors[m].live_sessions.remote(), timeout=30),
                     ray.get(engine.actors[m].stats.remote(), timeout=30)["running"]) for m in members}
        if not any(n for held in state.values() for n in held) or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


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


def test_runs_as_chunks_of_one_vllm_request_write_what_a_request_per_run_writes(ens, tiny_dir):
    """A session's runs on a vLLM member are chunks of one resumable request (actors/vllm_streams.py):
    the same texts, token for token, as the same members running each run as a new request
    (streaming_input: false), for sampled and greedy requests and a named session's second turn;
    and the chunks did carry the runs: a vLLM request per member session, where the other way sends
    one per run."""
    off = {**VLLM, "engine_options": {**VLLM["engine_options"], "streaming_input": False}}
    config = parse_config({"members": [{"name": m, "model": m, **off} for m in "ab"]}, tiny_dir)
    reqs = [dict(prompt="the river", max_tokens=60, seed=31, n=4, weights={"a": 1, "b": 1}),
            dict(prompt="a small dog", max_tokens=40, seed=32, n=2, temperature=0, weights={"a": 1, "b": 1}),
            dict(prompt="the sun", max_tokens=40, seed=33, n=2, top_p=0.9, weights={"a": 1, "b": 3})]
    before = {m: ray.get(ens.actors[m].stats.remote(), timeout=30) for m in "ab"}
    streamed = [texts(ens.generate(**r)) for r in reqs]

    def two_turns(engine, name):  # a named session: the second turn continues the first's log
        pair = {"a": 1, "b": 1}
        return [texts(engine.generate(prompt="once upon", max_tokens=24, seed=34, session=name, weights=pair)),
                texts(engine.generate(max_tokens=24, seed=35, session=name, weights=pair))]

    turns = two_turns(ens, "chunks-on")
    after = {m: ray.get(ens.actors[m].stats.remote(), timeout=30) for m in "ab"}
    with build_ensemble(config) as plain:
        assert streamed == [texts(plain.generate(**r)) for r in reqs]
        assert turns == two_turns(plain, "chunks-off")
        per_run = {m: ray.get(plain.actors[m].stats.remote(), timeout=30)["requests"] for m in "ab"}
    sessions = 4 + 2 + 2 + 2  # each choice is a member session, and each turn of the named one
    for m in "ab":
        requests = after[m]["requests"] - before[m]["requests"]
        assert 0 < requests <= sessions, (m, requests)
        assert per_run[m] > 3 * sessions, (m, per_run[m])  # the runs that each sent a request there


def test_release_leaves_no_request_running_in_vllm(ens):
    async def abandon():
        stream = ens.router.stream(GenerateRequest(prompt="the sun", max_tokens=400, seed=2, n=4,
                                                   weights={"a": 1, "b": 1}))
        await anext(stream)  # the first chunk: runs are going on both members
        await stream.aclose()  # the client went away

    asyncio.run(abandon())
    assert ens.live_sessions()["a"] == 0 and ens.live_sessions()["b"] == 0
    assert wait_idle(ens, "ab") == {"a": (0, 0), "b": (0, 0)}


def test_a_named_session_on_vllm_holds_nothing_running_between_turns_and_goes_on_as_one_request(ens):
    """Between turns a named session's vLLM members keep its log (release with keep) but run nothing
    and count no live session; the second turn writes what one request of both turns' length writes."""
    mix = {"prompt": "the moon", "seed": 4, "weights": {"a": 1, "c": 1}}
    first = ens.generate(**mix, max_tokens=12, session="held")
    assert first.choices[0].finish_reason == "length"
    assert wait_idle(ens, "a") == {"a": (0, 0)}
    second = ens.generate(session="held", max_tokens=12, seed=4, weights={"a": 1, "c": 1})
    whole = ens.generate(**mix, max_tokens=24)
    assert first.choices[0].text + second.choices[0].text == whole.choices[0].text
    assert wait_idle(ens, "a") == {"a": (0, 0)}


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


def test_concurrent_requests_and_disconnects_on_vllm_each_text_equals_its_run_alone(ens):
    """12 distinct requests at once (half streamed) and 4 clients that go away after their first
    chunk, on the two vLLM members: each text is what the request writes alone, and nothing stays
    held. Here vLLM's CPU rows came out bit-identical alone and in a batch of 12, and the texts
    matched in every try, greedy ones too. Where a batch rounds a row's last bit differently (other
    kernels, a GPU), a token sampled at temperature 1 flips only if its seeded uniform falls within
    that rounding of a boundary, an argmax at any near-tie: so this samples."""
    reqs = crowd(12, seed=0, max_tokens=40, weights={"a": 1, "b": 1})
    gone = crowd(4, seed=1, max_tokens=400, n=2, weights={"a": 1, "b": 1})
    before = shared_steps(ens, "ab")

    async def together():
        streams = (text_of(ens, r, stream=i % 2 == 0) for i, r in enumerate(reqs))
        return await asyncio.wait_for(asyncio.gather(*streams, *(abandon(ens, r) for r in gone)), timeout=120)

    got = asyncio.run(together())[: len(reqs)]
    shared = shared_steps(ens, "ab") - before
    assert wait_idle(ens, "ab") == {"a": (0, 0), "b": (0, 0)}
    alone = [ens.generate(r) for r in reqs]
    assert got == [texts(r) for r in alone]
    # Not "fewer steps than tokens", as this asked until 2026-11-30: a switch's catch-up is a step of
    # its own, so how many steps 20 sessions take depends on how their runs interleave in time (675
    # steps for 426 tokens in one run, 561 in the next); that they share steps does not (93 of them).
    assert shared > 0, "the sessions never shared a vLLM step"


def test_a_vllm_member_with_max_batch_2_under_8_sessions_writes_each_text_alone(tiny_dir, ray_local):
    """max_batch is vLLM's max_num_seqs: 8 sessions at once on a member that steps 2 of them at a
    time wait their turn in vLLM's queue, and each writes what it writes alone."""
    members = [{"name": "a", "model": "a", "max_batch": 2, **VLLM}]
    with build_ensemble(parse_config({"members": members}, tiny_dir)) as engine:
        reqs = crowd(8, seed=2, max_tokens=32)
        before = steps(engine, "a")

        async def together():
            return await asyncio.wait_for(asyncio.gather(
                *(text_of(engine, r, stream=i % 2 == 0) for i, r in enumerate(reqs))), timeout=120)

        got = asyncio.run(together())
        taken = steps(engine, "a") - before
        assert wait_idle(engine, "a") == {"a": (0, 0)}
        alone = [engine.generate(r) for r in reqs]
        assert got == [texts(r) for r in alone]
        tokens = sum(len(r.choices[0].token_ids) for r in alone)
        assert 2 * taken >= tokens, f"{taken} vLLM steps for {tokens} tokens: more than 2 sessions a step"


def test_killed_vllm_member_restarts_and_the_sent_text_stands(ens):
    """On vLLM a run's draws are seeded from its first step, so a run cut by a crash and replayed
    continues differently from the uncut run: what was sent stays, and the request completes."""
    req = GenerateRequest(prompt="the stone", max_tokens=60, seed=12, n=2, weights={"a": 1, "b": 1})
    victim, replays = pid(ens, "a"), ens.router.calls.replays["a"]

    async def kill_after_first_chunk():
        sent, final = {}, None
        async for item in ens.router.stream(req):
            if isinstance(item, Chunk):
                if not sent:  # nearly all 2 x 60 tokens still to go
                    os.kill(victim, signal.SIGKILL)  # the process dies; Ray restarts it
                sent[item.index] = sent.get(item.index, "") + item.text
            final = item
        return sent, final

    sent, final = asyncio.run(kill_after_first_chunk())
    for choice in final.choices:
        assert choice.text == sent[choice.index] and len(choice.token_ids) == 60
    assert ens.router.calls.replays["a"] > replays, "the kill landed after a's last call"
    assert pid(ens, "a") != victim
    assert ens.live_sessions()["a"] == 0


def test_http_and_grpc_serve_vllm_members_unchanged(tiny_dir, serve_instance):
    from ray import serve

    members = [{"name": "a", "model": "a", **VLLM}, {"name": "bt", "model": "b", "resources": {"num_cpus": 0.25}}]
    server = _deploy(tiny_dir, serve_instance, "vllm", "/vllm", {"members": members, "model_name": "vllm-pair"})
    try:
        _http_and_grpc(server)
        _disconnects(server)
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


def _disconnects(server):
    """Clients that go away mid-stream leave no session on the vLLM member: Serve cancels the
    request, its runs with it, and the releases still reach the member (router/clients.py)."""
    for seed in range(5):
        body = {"model": "a", "prompt": "the river", "max_tokens": 900, "stream": True, "seed": seed, "n": 2}
        with requests.post(server.http + "/v1/completions", json=body, stream=True, timeout=60) as r:
            first = next(line for line in r.iter_lines() if line)
            assert json.loads(first.removeprefix(b"data: "))["choices"][0]["finish_reason"] is None
        deadline = time.monotonic() + 3.0
        while any((live := requests.get(server.http + "/health", timeout=5).json()["live_sessions"]).values()):
            assert time.monotonic() < deadline, (seed, live)
            time.sleep(0.05)

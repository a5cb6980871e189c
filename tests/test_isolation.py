"""A request's failure is its own (docs/architecture.md invariant 8), on real members: a (vLLM) with a
small context, b (transformers) sharing its tokenizer. The case the issue saw: a request at a vLLM
member's context edge, with log-probs, while other streams run on that member, failed with 500 after
every other stream on the member had failed with its error. Now it is a 400 naming the member, and the
others write what they write alone."""
import asyncio
import random
from contextlib import aclosing

import numpy as np
import pytest
import ray

from mixserve.actors.member import MemberCore
from mixserve.actors.messages import SamplingParams, Segment, StepRequest
from mixserve.config import parse_config
from mixserve.references import resolve
from mixserve.router.request import ContextError, GenerateRequest, RequestError
from mixserve.router.session_log import Chunk
from mixserve.serving.ensemble import build_ensemble
from tests.test_vllm import wait_idle

MAX_MODEL_LEN = 128  # vLLM's; the member's context is one less (actors/vllm_engine.py)
CONTEXT = MAX_MODEL_LEN - 1


@pytest.fixture(scope="module")
def ens(tiny_dir, ray_local):
    members = [{"name": "a", "model": "a", "engine": "vllm", "resources": {"num_cpus": 0.25},
                "engine_options": {"kv_cache_space_gib": 0.25, "max_model_len": MAX_MODEL_LEN}},
               {"name": "b", "model": "b", "resources": {"num_cpus": 0.25}, "batch_invariant": True}]
    with build_ensemble(parse_config({"members": members, "member_retry_s": 120}, tiny_dir)) as engine:
        yield engine


def ids(count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(5, 300) for _ in range(count)]


STREAMS = [GenerateRequest(prompt=p, max_tokens=100, seed=i) for i, p in enumerate(["the cat", "a dog", "the sun",
                                                                                    "red stone"])]
GONE = [GenerateRequest(prompt=p, max_tokens=100, seed=10 + i, n=2) for i, p in enumerate(["blue moon", "the tree"])]


def test_a_request_at_a_vllm_members_context_edge_fails_alone_and_the_other_streams_write_their_texts(ens):
    """Four streams on a and b (a's runs are chunks of one vLLM request per session, paused while b
    writes) and two clients that go away. Meanwhile the issue's request (the context's worth of
    prompt ids, max_tokens 1, logprobs 0) is refused by the router before any member works, and a
    score past max_model_len, sent to the member itself, is refused by vLLM as it is added: each a 400
    naming the member, and nothing else fails."""
    edge = GenerateRequest(prompt=ids(CONTEXT, seed=1), max_tokens=1, logprobs=0, model="a")
    calls = ens.router.calls

    async def together():
        started = [asyncio.Event() for _ in STREAMS]

        async def text(i, req):
            out = ""
            async with aclosing(ens.router.stream(req)) as items:
                async for item in items:
                    started[i].set()
                    out += item.text if isinstance(item, Chunk) else ""
            return out

        async def gone(req):
            async with aclosing(ens.router.stream(req)) as items:
                await anext(items)
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 120)

        streams = asyncio.gather(*(text(i, r) for i, r in enumerate(STREAMS)), *(gone(r) for r in GONE))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 120)
        refusals = []
        for call in (ens.router.generate(edge),
                     calls.bounded("a", ens.router.members["a"].score(ids(MAX_MODEL_LEN, seed=2), 0, False))):
            with pytest.raises(RequestError) as refused:
                await call
            refusals.append(refused.value)
        return (await asyncio.wait_for(streams, 240))[: len(STREAMS)], refusals

    texts, (edge_error, vllm_error) = asyncio.run(together())
    assert isinstance(edge_error, ContextError) and edge_error.status == 400
    assert str(edge_error) == (f"the prompt is {CONTEXT} tokens and max_tokens is 1: {CONTEXT + 1} tokens for "
                               f"member 'a', whose context is {CONTEXT} tokens; shorten the prompt")
    assert vllm_error.status == 400 and str(vllm_error).startswith(
        f"member 'a' refused this request: The decoder prompt (length {MAX_MODEL_LEN})")
    assert wait_idle(ens, "a") == {"a": (0, 0)}  # every run of a stream ended or released is gone from vLLM
    alone = [ens.generate(r).choices[0].text for r in STREAMS]
    assert texts == alone and all(texts)


@pytest.mark.parametrize("member, context", [("a", CONTEXT), ("b", 1024)], ids=["vllm", "transformers"])
def test_log_probs_of_a_text_that_fills_the_context_are_served_and_correct(ens, tiny_dir, member, context):
    prompt = ids(context - 1, seed=3)
    result = ens.generate(prompt=prompt, max_tokens=1, logprobs=0, model=member, seed=4)
    choice = result.choices[0]
    assert len(prompt) + len(choice.token_ids) == context
    expected = MemberCore(member, resolve(str(tiny_dir / member))).score(prompt + choice.token_ids).token_logprobs
    assert choice.logprobs.token_logprobs[0] is None
    np.testing.assert_allclose(choice.logprobs.token_logprobs[1:], expected, atol=1e-3)


@pytest.mark.parametrize("member, context", [("a", CONTEXT), ("b", 1024)], ids=["vllm", "transformers"])
def test_past_a_members_context_is_a_400_and_a_full_session_ends_with_length(ens, member, context):
    with pytest.raises(ContextError, match=f"member '{member}', whose context is {context} tokens"):
        ens.generate(prompt=ids(context - 10, seed=5), max_tokens=11, model=member)
    # A member whose log fills its context (text another tokenizer wrote can take more of its own
    # tokens than the router counted) gives no ce row: the text ends there, "length".
    full = StepRequest("full", (Segment(ids=tuple(ids(context, seed=6))),), 0, 0, SamplingParams(),
                       distribution=True, fresh=True)
    answer = ray.get(ens.actors[member].whole.remote(full), timeout=60)
    assert (answer.finish, answer.probs) == ("length", None)
    assert ray.get(ens.actors[member].release.remote("full"), timeout=60)

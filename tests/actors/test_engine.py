"""The batching member engine, in process (no Ray): sessions share forwards, tokens stream as they
are sampled, and with batch_invariant a session's tokens are the same alone or in any batch."""
import asyncio

import pytest
import torch

from mixserve.actors.engine import MemberEngine
from mixserve.references import resolve
from mixserve.actors.messages import InputRefused, SamplingParams, Segment, StepRequest


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return MemberEngine(name="a", source=resolve(str(tiny_dir / "a")), max_batch=16, batch_invariant=True)


def opening(engine, session, prompt, steps, seed, first=0):
    ids = tuple(engine.prompt_ids(prompt))
    return StepRequest(session, (Segment(ids=ids),), first, steps, SamplingParams(seed=seed), fresh=True)


async def collect(engine, req):
    return [part async for part in engine.step(req)]


def test_concurrent_sessions_share_forwards_and_match_their_runs_alone(engine):
    prompts = ["the cat", "a dog ran", "the moon", "sun", "river stones and sand", "one", "two", "three"]
    alone = [engine.core.step(opening(engine, f"alone{i}", p, 12, seed=i)) for i, p in enumerate(prompts)]
    for i in range(len(prompts)):
        engine.release(f"alone{i}")

    async def crowd():
        return await asyncio.gather(*(collect(engine, opening(engine, f"crowd{i}", p, 12, seed=i))
                                      for i, p in enumerate(prompts)))

    before, computed = engine.batches, engine.stats()["compute_s"]
    streams = asyncio.run(crowd())
    for whole, parts in zip(alone, streams):
        assert [t for part in parts for t in part.tokens] == whole.tokens
        assert parts[-1].finish == whole.finish
    produced = sum(len(w.tokens) for w in alone)
    # Eight sessions of up to 12 tokens: shared forwards, not one per token.
    assert engine.batches - before <= 13 < produced
    assert engine.stats()["compute_s"] > computed  # the time in forwards, for bench breakdowns
    for i in range(len(prompts)):
        engine.release(f"crowd{i}")
    assert engine.live_sessions() == 0


def test_tokens_stream_before_the_run_ends(engine):
    async def first_part():
        stream = engine.step(opening(engine, "streamed", "the cat", 64, seed=4))
        part = await anext(stream)
        running = "streamed" in engine.jobs
        await stream.aclose()
        return part, running

    part, running = asyncio.run(first_part())
    assert len(part.tokens) < 64 and running
    engine.release("streamed")


def test_release_ends_a_run_in_flight_and_a_late_step_is_dropped(engine):
    async def scenario():
        stream = engine.step(opening(engine, "gone", "the cat", 4096, seed=1))
        await anext(stream)
        engine.release("gone")
        rest = [part async for part in stream]  # ends instead of running 4096 steps
        late = await collect(engine, opening(engine, "gone", "the cat", 4, seed=1))
        return rest, late

    rest, late = asyncio.run(scenario())
    assert sum(len(p.tokens) for p in rest) < 16 and late == []
    assert engine.live_sessions() == 0 and not engine.jobs


def test_a_distribution_request_is_one_row_of_the_batch(engine):
    req = StepRequest("dist", opening(engine, "dist", "the cat", 0, 0).delta, 0, 0, SamplingParams(), True, True)
    (part,) = asyncio.run(collect(engine, req))
    assert part.probs.shape == (engine.book.vocab_size,) and abs(part.probs.sum() - 1) < 1e-4
    engine.release("dist")


def test_a_session_that_fills_the_context_gets_no_forward_past_it(engine):
    """max_position_embeddings is the end of a session: a ce row or an eager sync's catch-up on a log
    that fills it ends the text with finish "length" (a row) or computes nothing (a catch-up), where
    the model would have run positions its table does not have; a sequence longer than the context is
    refused for scoring, one that fills it is scored."""
    full = (Segment(ids=(5,) * engine.book.context_length),)
    before = engine.batches
    row = asyncio.run(collect(engine, StepRequest("full-row", full, 0, 0, SamplingParams(), distribution=True,
                                                  fresh=True)))
    sync = asyncio.run(collect(engine, StepRequest("full-sync", full, 0, 0, SamplingParams(), fresh=True)))
    assert [(part.finish, part.probs) for part in row] == [("length", None)] and sync == []
    assert engine.batches == before
    assert len(asyncio.run(engine.score(list(full[0].ids))).token_logprobs) == engine.book.context_length - 1
    with pytest.raises(InputRefused, match=f"the context is {engine.book.context_length}"):
        asyncio.run(engine.score([5] * (engine.book.context_length + 1)))
    assert engine.release("full-row") and engine.release("full-sync")


@pytest.mark.parametrize("invariant", [True, False])
def test_a_row_in_a_batch_matches_the_row_alone(tiny_dir, invariant):
    """Bit for bit with batch_invariant; otherwise within float32 rounding of a different BLAS path."""
    from mixserve.actors.member import MemberCore, SessionCache

    core = MemberCore("b", resolve(str(tiny_dir / "b")), batch_invariant=invariant)
    prompts = [core.prompt_ids(p) for p in ("the cat sat", "a", "the moon and the sun", "river")]
    alone = [core.forward([SessionCache(ids=list(p))])[0] for p in prompts]
    crowd = core.forward([SessionCache(ids=list(p)) for p in prompts])
    for one, row in zip(alone, crowd):
        assert torch.equal(one, row) if invariant else torch.allclose(one, row, atol=1e-4)


def test_a_replayed_prefill_is_bit_identical_to_decoding_token_by_token(tiny_dir):
    """What makes a member restart or an eviction invisible: the log replayed in one forward gives
    the same numbers as the steps that first produced it."""
    from mixserve.actors.member import MemberCore, SessionCache

    core = MemberCore("a", resolve(str(tiny_dir / "a")), batch_invariant=True)
    ids = core.prompt_ids("the cat sat on the mat and")
    stepwise = SessionCache(ids=ids[:2])
    for t in range(2, len(ids)):
        core.forward([stepwise])
        stepwise.ids.append(ids[t])
    assert torch.equal(core.forward([stepwise])[0], core.forward([SessionCache(ids=list(ids))])[0])


def test_a_forward_that_fails_fails_its_requests_and_the_engine_keeps_serving(engine, monkeypatch):
    real = engine.core.forward

    def broken(rows):
        monkeypatch.setattr(engine.core, "forward", real)  # only the first call fails
        raise RuntimeError("out of memory")

    monkeypatch.setattr(engine.core, "forward", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        asyncio.run(collect(engine, opening(engine, "broken", "the cat", 4, seed=1)))
    parts = asyncio.run(collect(engine, opening(engine, "after", "the cat", 4, seed=1)))
    alone = engine.core.step(opening(engine, "alone", "the cat", 4, seed=1))
    assert [t for p in parts for t in p.tokens] == alone.tokens and not engine.jobs
    for session in ("broken", "after", "alone"):
        engine.release(session)

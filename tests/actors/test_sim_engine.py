"""engine sim (actors/sim_engine.py, actors/sim_core.py): a member with no model whose ticks last
step_ms + per_seq_ms per session, whose tokens depend on the seed alone, and which an ensemble serves
as any member: ME's first token follows the exact mixture of the members' closed-form distributions."""
import asyncio
import time

import numpy as np
import pytest

from mixserve.actors.messages import SamplingParams, Segment, SessionLost, StepRequest
from mixserve.actors.sim_core import SimCore, ZipfRows
from mixserve.actors.sim_engine import SimEngine
from mixserve.actors.sim_vocab import SPECIAL
from mixserve.config import parse_config
from mixserve.models.sim import sim_config
from tests.exact import p_value

PROMPT = "the cat sat on"
# A correct sampler fails with probability ALPHA for a random seed; the fixed seed makes each run the
# same. N is what makes the test able to tell the mixture from member a alone (b's weight is only 0.2):
# drawn straight from the exact mixture, 6,000 samples reject a alone at p below 1e-50 (five draws,
# 1e-58 to 1e-92), where 2,000 reached only 1e-9 to 1e-16.
N = 6000
ALPHA = 1e-9


def request(engine, session: str, steps: int, seed: int = 0, fresh: bool = True, **fields) -> StepRequest:
    delta = (Segment(tuple(engine.prompt_ids(PROMPT))),) if fresh else ()
    return StepRequest(session, delta, 0, steps, SamplingParams(seed=seed, **fields.pop("sampling", {})),
                       fresh=fresh, **fields)


def tokens_of(engine, requests) -> list[list[int]]:
    async def go():
        return [r.tokens for r in await asyncio.gather(*(engine.whole(req) for req in requests))]
    return asyncio.run(go())


def test_a_tick_lasts_step_ms_plus_per_seq_ms_per_session_in_it():
    def mean_tick(sessions: int) -> float:
        engine = SimEngine(max_batch=64, name="a", sim={"step_ms": 20, "per_seq_ms": 4})
        started = time.perf_counter()
        tokens_of(engine, [request(engine, f"s{i}", 6, seed=i) for i in range(sessions)])
        assert engine.batches == 6  # six tokens, the first with the prompt's catch-up: every session in every tick
        # the first tick's catch-ups count as sessions once more
        assert engine.stats()["compute_s"] == pytest.approx((6 * (20 + 4 * sessions) + 4 * sessions) / 1000)
        return (time.perf_counter() - started) / engine.batches * 1000

    alone, together = mean_tick(1), mean_tick(32)
    assert 24 <= alone < 28 + 250  # asleep at least the tick's time; a busy machine only adds to it
    assert 148 <= together < 276 + 250
    assert together - alone > 0.5 * 31 * 4  # the batch's cost shows, whatever the machine adds to both


def test_sessions_past_max_batch_wait_their_turn():
    engine = SimEngine(max_batch=4, name="a", sim={"step_ms": 1, "per_seq_ms": 0})
    tokens_of(engine, [request(engine, f"s{i}", 5, seed=i) for i in range(12)])
    stats = engine.stats()
    assert stats["rows"] == 12 * 5 and engine.batches >= 12 * 5 / 4  # never more than 4 sessions a tick


def test_the_same_seed_gives_the_same_text_whatever_the_batch():
    alone = SimEngine(max_batch=1, name="a", sim={"step_ms": 0})
    crowd = SimEngine(max_batch=32, name="a", sim={"step_ms": 0})
    (first,) = tokens_of(alone, [request(alone, "x", 12, seed=7)])
    many = tokens_of(crowd, [request(crowd, f"s{i}", 12, seed=i) for i in range(16)])
    core = SimCore("a").step(request(crowd, "y", 12, seed=7))  # in the router's process, no clock
    assert many[7] == first == core.tokens and len(first) == 12
    assert len({tuple(t) for t in many}) == 16  # other seeds, other texts
    other = SimEngine(name="b", sim={"step_ms": 0})
    assert tokens_of(other, [request(other, "x", 12, seed=7)])[0] != first  # another member, other tokens


def test_sampling_settings_apply_and_the_text_decodes():
    engine = SimEngine(name="a", sim={"step_ms": 0})
    greedy = tokens_of(engine, [request(engine, f"g{i}", 6, seed=i, sampling={"temperature": 0}) for i in range(2)])
    assert greedy[0] == greedy[1]  # temperature 0: the seed does not matter
    top1 = tokens_of(engine, [request(engine, "k", 6, seed=3, sampling={"top_k": 1})])[0]
    assert top1 == greedy[0]
    pieces = engine.pieces()
    assert len(pieces) == 32768 and all(t >= len(SPECIAL) for t in greedy[0])  # never an end token
    assert b"".join(pieces[i] for i in engine.prompt_ids(PROMPT)) == PROMPT.encode()
    assert engine.prompt_ids(messages=[{"role": "user", "content": "hi"}])  # a chat through its template


def test_ce_gets_the_whole_distribution_and_score_agrees_with_it():
    engine = SimEngine(name="a", sim={"step_ms": 0, "vocab_size": 4096})
    row = asyncio.run(engine.whole(request(engine, "d", 0, distribution=True))).probs  # the prompt's tick
    assert row.shape == (4096,) and row[: len(SPECIAL)].sum() == 0 and row.sum() == pytest.approx(1, abs=1e-5)
    ids = engine.prompt_ids(PROMPT)
    greedy = engine.core.step(request(engine, "g", 1, sampling={"temperature": 0})).tokens[0]
    scores = engine.core.score([*ids, greedy], top=2)
    assert scores.top_ids[-1][0] == greedy == int(np.argmax(row))
    assert scores.token_logprobs[-1] == pytest.approx(np.log(row.max()), abs=1e-5)


def test_release_ends_a_run_and_the_session():
    engine = SimEngine(name="a", sim={"step_ms": 5})

    async def go():
        run = asyncio.create_task(engine.whole(request(engine, "r", 1000)))
        deadline = time.monotonic() + 60
        while engine.batches < 3 and time.monotonic() < deadline:  # until it decodes
            await asyncio.sleep(0.01)
        assert engine.release("r") is True
        result = await asyncio.wait_for(run, 10)
        late = await engine.whole(request(engine, "r", 5))  # a step that arrives after its release
        return result, late

    result, late = asyncio.run(go())
    assert 0 < len(result.tokens) < 1000 and late.tokens == [] and engine.live_sessions() == 0


def test_a_session_it_does_not_hold_is_lost_and_evicted_ones_too():
    engine = SimEngine(name="a", max_sessions=2, sim={"step_ms": 0})
    with pytest.raises(SessionLost):
        tokens_of(engine, [request(engine, "nobody", 1, fresh=False)])
    for session in ("s1", "s2", "s3"):  # past max_sessions the least recently used goes
        tokens_of(engine, [request(engine, session, 1)])
    assert engine.live_sessions() == 2 and engine.stats()["evictions"] == 1
    with pytest.raises(SessionLost):
        tokens_of(engine, [request(engine, "s1", 1, fresh=False)])
    assert len(tokens_of(engine, [request(engine, "s3", 2, fresh=False)])[0]) == 2  # a held one goes on


def test_a_catch_up_samples_in_its_tick_and_costs_one_session_more():
    engine = SimEngine(name="a", sim={"step_ms": 0, "per_seq_ms": 1})
    tokens_of(engine, [request(engine, "c", 3)])
    assert engine.batches == 3  # three tokens, the first in the prompt's tick
    ids = engine.prompt_ids(" and the dog")
    assert len(ids) > 1
    asyncio.run(engine.whole(StepRequest("c", (Segment(tuple(ids)),), 3, 2, SamplingParams())))
    assert engine.batches == 3 + 2  # what another member wrote is caught up in the run's first tick
    assert engine.stats()["compute_s"] == pytest.approx((2 + 1 + 1 + 2 + 1) / 1000)


def fast_config(vocab_sizes=(4096, 4096), **top):
    raw = sim_config(**top)
    for m, vocab_size in zip(raw["members"], vocab_sizes):
        m["sim"].update(step_ms=2, per_seq_ms=0.05, vocab_size=vocab_size)  # fast ticks; ce's rows small
        m["max_batch"] = 64
    return parse_config(raw)


@pytest.fixture(scope="module")
def sims(ray_local):
    from mixserve.serving.ensemble import build_ensemble

    with build_ensemble(fast_config()) as ensemble:
        yield ensemble


def exact_first_token(ensemble) -> dict[tuple[int, ...], float]:
    """Σ λᵢ pᵢ(x | the prompt's last token), from the members' closed forms (not through mixserve)."""
    last = SimCore("a", sim=ensemble.config.members[0].sim).book.prompt_ids(PROMPT)[-1]
    mixture = sum(m.weight * ZipfRows(m.sim["vocab_size"], m.sim["seed"], len(SPECIAL)).row(last)
                  for m in ensemble.config.members)
    return {(i,): float(p) for i, p in enumerate(mixture) if p > 0}


def only_a(ensemble) -> dict[tuple[int, ...], float]:
    a = ensemble.config.members[0]
    last = SimCore("a", sim=a.sim).book.prompt_ids(PROMPT)[-1]
    return {(i,): float(p) for i, p in enumerate(ZipfRows(a.sim["vocab_size"], a.sim["seed"], len(SPECIAL)).row(last))
            if p > 0}


def test_an_ensemble_of_sim_members_samples_the_exact_mixture(sims):
    result = sims.generate(prompt=PROMPT, max_tokens=1, n=N, seed=20261204)
    first = [tuple(c.token_ids[:1]) for c in result.choices]
    assert p_value(first, exact_first_token(sims)) > ALPHA
    assert p_value(first, only_a(sims)) < ALPHA  # the test can tell a member from the mixture


def test_an_ensemble_of_sim_members_writes_the_same_texts_by_seed(sims):
    for method in ("me", "ce"):
        one = sims.generate(prompt=PROMPT, max_tokens=12, seed=5, method=method)
        again = sims.generate(prompt=PROMPT, max_tokens=12, seed=5, method=method)
        assert one.method == method and one.choices[0].finish_reason == "length"
        assert again.choices[0].text == one.choices[0].text and len(one.choices[0].token_ids) == 12
    me = sims.generate(prompt=PROMPT, max_tokens=24, seed=5, method="me").choices[0]
    assert set(me.members) == {"a", "b"}  # both members wrote
    assert sims.live_sessions() == {"a": 0, "b": 0}
    from mixserve.serving.ensemble import build_ensemble

    in_process = build_ensemble(sims.config, in_process=True)  # the cores alone, no clock, no Ray
    assert in_process.generate(prompt=PROMPT, max_tokens=24, seed=5, method="me").choices[0].text == me.text


@pytest.mark.parametrize("method", ["me", "ce"])
def test_sim_members_of_other_vocabularies_read_each_others_text(method):
    from mixserve.serving.ensemble import build_ensemble

    ensemble = build_ensemble(fast_config((4096, 8192), token_healing=True), in_process=True)
    choice = ensemble.generate(prompt=PROMPT, max_tokens=24, seed=9, method=method).choices[0]
    assert choice.finish_reason == "length" and len(choice.token_ids) == 24
    if method == "me":
        assert set(choice.members) == {"a", "b"}


def test_sim_members_score_text_for_logprobs_and_echo(sims):
    result = sims.generate(prompt=PROMPT, max_tokens=8, seed=3, logprobs=2, echo=True)
    logprobs = result.choices[0].logprobs
    assert logprobs.token_logprobs[0] is None and len(logprobs.token_logprobs) == logprobs.prompt_tokens + 8
    assert all(-30 < lp < 0 for lp in logprobs.token_logprobs[1:])  # every token one the members can say
    assert all(len(top) == 2 for top in logprobs.top_logprobs[1:])

"""Counter-based sampling: a draw depends on (seed, step) and the distribution, nothing else."""
import math

import torch

from mixserve.actors.messages import SamplingParams
from mixserve.actors.sampling import pick, pick_mixture, uniform


def test_uniform_is_a_pure_function_of_seed_step_stream():
    assert uniform(7, 3, 2) == uniform(7, 3, 2)
    draws = {uniform(7, t, 2) for t in range(1000)}
    assert len(draws) == 1000 and all(0 <= u < 1 for u in draws)
    assert uniform(7, 3, 1) != uniform(7, 3, 2) and uniform(8, 3, 2) != uniform(7, 3, 2)


def test_pick_frequencies_match_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    counts = torch.zeros(4)
    for t in range(20000):
        counts[pick(probs.log(), SamplingParams(seed=1), t)] += 1
    # sd <= 0.0036 at n=20000; 0.025 is 7 sd (false failure < 1e-11); a zero-probability token never.
    assert torch.allclose(counts / 20000, probs, atol=0.025) and counts[3] == 0


def test_greedy_top_k_top_p():
    logp = torch.tensor([0.1, 0.5, 0.25, 0.15]).log()
    assert pick(logp, SamplingParams(temperature=0), 0) == 1
    top2 = {pick(logp, SamplingParams(top_k=2, seed=3), t) for t in range(300)}
    assert top2 == {1, 2}
    # top_p=0.7: 0.5 + 0.25 reaches it, so exactly tokens 1 and 2 survive.
    assert {pick(logp, SamplingParams(top_p=0.7, seed=3), t) for t in range(300)} == {1, 2}
    assert {pick(logp, SamplingParams(top_p=0.5, seed=3), t) for t in range(300)} == {1}


def test_low_temperature_sharpens():
    logp = torch.tensor([math.log(0.6), math.log(0.4)])
    cold = sum(pick(logp, SamplingParams(temperature=0.05, seed=2), t) for t in range(2000))
    assert cold < 5  # 0.4/0.6 to the power 20 is 3e-4 per draw


def test_pick_mixture_samples_the_same_tokens_as_pick_on_its_log():
    """CE's fast path skips the log and softmax at temperature 1: the draw is the same (up to a
    rounding at a CDF boundary, which the seeded uniforms here do not hit), and any other sampling
    setting goes through `pick` itself."""
    mixture = torch.softmax(torch.randn(50_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64), -1)
    for params in (SamplingParams(seed=4), SamplingParams(seed=4, temperature=0.7), SamplingParams(seed=4, top_k=40),
                   SamplingParams(seed=4, top_p=0.9), SamplingParams(temperature=0)):
        fast = [pick_mixture(mixture, params, t) for t in range(200)]
        assert fast == [pick(mixture.log(), params, t) for t in range(200)], params
        assert len(set(fast)) > (1 if params.temperature else 0)

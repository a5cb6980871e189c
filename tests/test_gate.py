"""Under a prompt gate ME still samples the exact mixture, with the weights the gate gives that prompt
(mixserve/gate.py; docs/architecture.md, "Weights that fit the prompt"). Two prompts the gate weighs
differently, each tested against its own exact mixture and, for power, against the other's weights."""
from dataclasses import replace

import pytest

from mixserve.gate import ClusterGate
from tests.exact import outcome_probs, p_value, two_token_tables

N = 2000
ALPHA = 1e-9  # a correct sampler fails with this probability for a random seed; the seed is fixed
PROMPTS = {"the cat": {"a": 0.85, "b": 0.15}, "the dog": {"a": 0.15, "b": 0.85}}
GATE = ClusterGate(("cat", "dog"), (1.0, 1.0), ((1.0, 0.0), (0.0, 1.0)), tuple(PROMPTS.values()))


@pytest.fixture
def gated(ensemble, monkeypatch):
    monkeypatch.setattr(ensemble.router, "config", replace(ensemble.router.config, gate=GATE))
    return ensemble


@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_me_under_the_gate_samples_the_prompts_own_mixture(gated, tiny_dir, prompt):
    tables = [two_token_tables(tiny_dir / m, prompt) for m in "ab"]
    result = gated.generate(prompt=prompt, max_tokens=2, n=N, seed=20261130)
    assert result.weights == pytest.approx(PROMPTS[prompt])  # the response says which weights it used
    draws = [tuple(c.token_ids) for c in result.choices]
    weights = [PROMPTS[prompt][m] for m in "ab"]
    assert p_value(draws, outcome_probs(tables, weights, eos=0)) > ALPHA
    assert p_value(draws, outcome_probs(tables, weights[::-1], eos=0)) < ALPHA  # the other prompt's weights: rejected


def test_weights_in_the_request_override_the_gate_and_the_reply_says_so(gated):
    result = gated.generate(prompt="the cat", max_tokens=4, seed=1, weights={"a": 1, "b": 1})
    assert result.weights == {"a": 0.5, "b": 0.5}
    assert gated.generate(prompt="the moon", max_tokens=4, seed=1).weights == {"a": 0.5, "b": 0.5}  # no gate word: the config's

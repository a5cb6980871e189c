"""ME samples the conventional ensemble's distribution exactly (docs/architecture.md, "The idea").

Thousands of two-token continuations drawn by ME through Ray are tested against the exact per-step
mixture computed from the models directly. The same test must reject a sampler that picks one member
per sequence, proving it has the power to see the difference it claims to check.
"""
import pytest

from mixserve.router import router as router_module
from mixserve.router.policies.base import Turn
from mixserve.router.policies.me import MixtureEnsemble
from tests.exact import outcome_probs, p_value, two_token_tables

N = 2000
PROMPT = "the cat"
# A correct sampler fails with probability ALPHA for a random seed (1e-9, far below one in a million);
# the fixed seed makes each run identical. The wrong sampler's expected chi-square exceeds 1000.
ALPHA = 1e-9


class PerSequence(MixtureEnsemble):
    """Deliberately wrong: one member for the whole continuation."""

    def turn(self, step, remaining):
        return Turn((self.choose(0),), remaining)


@pytest.fixture(scope="module")
def exact(tiny_dir):
    tables = [two_token_tables(tiny_dir / m, PROMPT) for m in "ab"]
    return outcome_probs(tables, [0.5, 0.5], eos=0)


def draw(engine):
    result = engine.generate(prompt=PROMPT, max_tokens=2, n=N, seed=20261123)
    return [tuple(c.token_ids) for c in result.choices]


def test_me_matches_the_exact_mixture(ensemble, exact):
    assert p_value(draw(ensemble), exact) > ALPHA


def test_the_test_rejects_one_member_per_sequence(ensemble, exact, monkeypatch):
    monkeypatch.setattr(router_module, "make_policy",
                        lambda method, weights, member, seed, runs: PerSequence(weights, seed))
    assert p_value(draw(ensemble), exact) < ALPHA

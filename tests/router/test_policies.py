"""Policies: who runs which steps."""
from collections import Counter

from mixserve.router.policies import make_policy


def test_me_choice_frequencies_follow_the_weights():
    policy = make_policy("me", {"a": 0.7, "b": 0.2, "c": 0.1}, None, seed=5, runs=True)
    counts = Counter(policy.choose(t) for t in range(20000))
    # Binomial sd at n=20000 is <= 0.0036; 0.025 is 7 sd: a false failure is below 1e-11.
    for name, w in {"a": 0.7, "b": 0.2, "c": 0.1}.items():
        assert abs(counts[name] / 20000 - w) < 0.025


def test_me_runs_cover_exactly_the_per_step_choices():
    runs = make_policy("me", {"a": 0.5, "b": 0.5}, None, seed=9, runs=True)
    step, seen = 0, []
    while step < 2000:
        turn = runs.turn(step, 2000 - step)
        assert all(runs.choose(t) == turn.members[0] for t in range(step, step + turn.steps))
        seen.append(turn.steps)
        step += turn.steps
    assert step == 2000
    # Equal weights: turns per token is 1 - sum(w^2) = 0.5, sd 0.011 at 2000 steps; 0.075 is 6.7 sd.
    assert 0.425 < len(seen) / 2000 < 0.575
    no_runs = make_policy("me", {"a": 0.5, "b": 0.5}, None, seed=9, runs=False)
    assert no_runs.turn(0, 2000).steps == 1


def test_single_and_ce_turns():
    assert make_policy("single", {"b": 1.0}, "b", seed=0, runs=True).turn(3, 7).members == ("b",)
    assert make_policy("single", {"b": 1.0}, "b", seed=0, runs=True).turn(3, 7).steps == 7
    turn = make_policy("ce", {"a": 0.25, "b": 0.75}, None, seed=0, runs=True).turn(0, 5)
    assert turn.members == ("a", "b") and turn.weights == (0.25, 0.75) and turn.steps == 1

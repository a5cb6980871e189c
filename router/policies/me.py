"""ME: each step, member i with probability w_i; only it computes (the paper's method)."""
from __future__ import annotations

import bisect
import itertools

from mixserve.actors.sampling import CHOICE, uniform

from .base import Turn


class MixtureEnsemble:
    def __init__(self, weights: dict[str, float], seed: int, runs: bool = True):
        self.names = list(weights)
        self.bounds = list(itertools.accumulate(weights.values()))
        self.seed = seed
        self.runs = runs

    def choose(self, step: int) -> str:
        """The member for `step`: a function of (seed, step) only (docs/architecture.md invariant 3)."""
        u = uniform(self.seed, step, CHOICE) * self.bounds[-1]
        return self.names[min(bisect.bisect_right(self.bounds, u), len(self.names) - 1)]

    def turn(self, step: int, remaining: int) -> Turn:
        member = self.choose(step)
        steps = 1
        # Fixed weights do not depend on the text, so the whole run of steps this member owns is
        # known now: ask for it in one call (docs/architecture.md invariant 5).
        while self.runs and steps < remaining and self.choose(step + steps) == member:
            steps += 1
        return Turn((member,), steps)

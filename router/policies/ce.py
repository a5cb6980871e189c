"""CE: every member every step; the router samples from the weighted mixture of their distributions."""
from __future__ import annotations

from .base import Turn


class ConventionalEnsemble:
    def __init__(self, weights: dict[str, float]):
        self.every = Turn(tuple(weights), 1, tuple(weights.values()))  # the one turn, at every step

    def turn(self, step: int, remaining: int) -> Turn:
        return self.every

"""The policy interface: given the step and the steps left, say who runs the next turn."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Turn:
    members: tuple[str, ...]
    steps: int  # consecutive steps this turn owns
    weights: tuple[float, ...] = ()  # set for a mixture turn: every member's distribution, mixed


class Policy(Protocol):
    def turn(self, step: int, remaining: int) -> Turn: ...

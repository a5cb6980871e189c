"""One request's timings as a client sees them, the same for every row of `mixserve bench`: the
in-process rows (mixserve/bench/methods.py) and the served app's (mixserve/bench/http.py)."""
from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Run:
    """One request, as a client sees it."""

    tokens: int
    total_s: float
    first_token_s: float
    gaps_ms: list[float]  # per token after the first: time since the previous chunk / its tokens
    forwards: int
    trips: int
    switches: int | None = None  # times the member computing the text changed (ME); None: not seen (HTTP)


class Clock:
    """Time to the first token, then per token the time since the previous chunk divided among the
    chunk's tokens."""

    def __init__(self):
        self.started = self.last = time.perf_counter()
        self.first: float | None = None
        self.gaps: list[float] = []

    def arrived(self, tokens: int) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now - self.started
        else:
            self.gaps += [1000 * (now - self.last) / tokens] * tokens
        self.last = now

    def run(self, tokens: int, forwards: int, trips: int, switches: int | None = None) -> Run:
        return Run(tokens, time.perf_counter() - self.started, self.first or 0.0, self.gaps, forwards, trips,
                   switches)

"""The simulated member's core (engine sim, docs/configuration.md "Engines"): no model, a next-token
distribution in closed form over a synthetic tokenizer (actors/sim_vocab.py). actors/sim_engine.py
adds the clock and the batching; in the router's process this core steps alone (tests).

p(x | member seed, last token) is a Zipf law over ranks (rank r has weight (r + 1)^-1.1, about 0.14 for
the first of 32k ids) laid on the ids by an affine permutation, r -> (a·r + b) mod n, with (a, b)
drawn from (seed, last token): cheap to sample (one search in the ranks' CDF), and each member and each
context has its own order. The end token and the chat markers are never sampled, so a sim member writes
every response to max_tokens and its load is what the client asks.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from mixserve.sim import DEFAULTS, seed_of

from .member import StepCore
from .messages import InputRefused, SamplingParams, Scores
from .sampling import TOKEN, pick, uniform
from .sessions import SessionBook, SessionCache
from .sim_vocab import SPECIAL, sim_tokenizer

EXPONENT = 1.1
MAP_A, MAP_B = 3, 4  # streams of sampling.uniform for the permutation, apart from the choice's and the token's
FLOOR = float(np.log(np.finfo(np.float32).tiny))  # the log-prob reported for ids it never says


class ZipfRows:
    """The distributions: `sample` a token from a uniform, the whole `row`, one token's `logp`."""

    def __init__(self, vocab_size: int, seed: int, first: int):
        self.seed, self.first, self.n = seed, first, vocab_size - first  # ids [first, vocab_size) are said
        weights = np.arange(1, self.n + 1, dtype=np.float64) ** -EXPONENT
        self.by_rank = weights / weights.sum()  # (n,)
        self.cdf = np.cumsum(self.by_rank)  # (n,)
        self.ranks = np.arange(self.n, dtype=np.int64)  # (n,)

    def _order(self, last: int) -> tuple[int, int]:
        a = 1 + int(uniform(self.seed, last, MAP_A) * (self.n - 1))
        while math.gcd(a, self.n) != 1:  # a bijection needs a coprime to n
            a = a % (self.n - 1) + 1
        return a, int(uniform(self.seed, last, MAP_B) * self.n)

    def token(self, last: int, rank: int) -> int:
        a, b = self._order(last)
        return self.first + (a * rank + b) % self.n

    def sample(self, last: int, u: float) -> int:
        """Inverse CDF over the ranks: the same law as over the ids, one search instead of a whole row."""
        return self.token(last, min(int(np.searchsorted(self.cdf, u * self.cdf[-1], side="right")), self.n - 1))

    def row(self, last: int) -> np.ndarray:
        """p(x | last) (first + n,) float64."""
        a, b = self._order(last)
        out = np.zeros(self.first + self.n)
        out[self.first + (a * self.ranks + b) % self.n] = self.by_rank
        return out

    def logp(self, last: int, token: int) -> float:
        if not self.first <= token < self.first + self.n:
            return FLOOR
        a, b = self._order(last)
        return float(np.log(self.by_rank[(token - self.first - b) * pow(a, -1, self.n) % self.n]))


class SimCore(StepCore):
    """A simulated member's book and distributions. A row is a session's last token: all its next
    token depends on."""

    def __init__(self, name: str, source=None, dtype: str = "auto", threads: int = 1,
                 max_sessions: int | None = None, sim: dict | None = None):
        sim = {**DEFAULTS, "seed": seed_of(name), **(sim or {})}
        self.book = SessionBook(name, sim_tokenizer(sim["vocab_size"]), (0,), sim["context_length"], max_sessions)
        self.rows_of = ZipfRows(sim["vocab_size"], sim["seed"], len(SPECIAL))

    def forward(self, rows: list[SessionCache]) -> list[int]:
        self.forwards += 1
        self.rows += len(rows)
        for s in rows:
            s.cached = len(s.ids)
        return [s.ids[-1] if s.ids else -1 for s in rows]

    def probs(self, last: int) -> np.ndarray:
        return self.rows_of.row(last).astype(np.float32)

    def advance(self, s: SessionCache, last: int, sampling: SamplingParams, step: int,
                more: bool) -> tuple[int, bytes, str] | None:
        """MemberCore.advance's contract. The default sampling draws straight from the ranks; anything
        else (temperature, top-k, top-p, token healing's mask) goes through sampling.pick on the row."""
        heal, allowed = self.book.healing(s)
        if allowed is None and sampling.temperature == 1 and sampling.top_k == 0 and sampling.top_p >= 1:
            token = self.rows_of.sample(last, uniform(sampling.seed, step, TOKEN))
        else:
            logp = torch.log(torch.from_numpy(self.rows_of.row(last)))  # (vocab,) float64
            if allowed is not None:
                logp = torch.full_like(logp, -math.inf).index_copy(0, allowed, logp[allowed])
            token = pick(logp, sampling, step)
        out = self.book.accept(s, token, heal, more)
        return None if out is None else (token, *out)

    def score(self, ids: list[int], top: int = 0, rows: bool = False) -> Scores:
        """Teacher-forced log-probs of ids[1:], as MemberCore.score, in closed form."""
        if len(ids) > self.book.context_length:
            raise InputRefused(f"{len(ids)} tokens to score; the context is {self.book.context_length}")
        chosen = np.array([self.rows_of.logp(last, token) for last, token in zip(ids, ids[1:])], np.float32)
        if rows:
            every = np.array([self.rows_of.row(last) for last in ids[:-1]]).reshape(len(ids) - 1, self.book.vocab_size)
            with np.errstate(divide="ignore"):
                return Scores(chosen, rows=np.maximum(np.log(every), FLOOR).astype(np.float32))  # (L-1, vocab)
        top = min(top, self.rows_of.n)
        best = np.array([[self.rows_of.token(last, r) for r in range(top)] for last in ids[:-1]], np.int64)
        values = np.tile(np.log(self.rows_of.by_rank[:top]).astype(np.float32), (len(ids) - 1, 1))
        return Scores(chosen, best.reshape(len(ids) - 1, top), values)

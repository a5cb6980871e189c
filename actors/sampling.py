"""Counter-based sampling (docs/architecture.md invariant 3).

Every random draw is a pure function of (seed, step, stream): no generator state travels between
calls, so a token comes out the same whichever process samples it, whatever ran before, and after
any restart. Tokens are drawn by inverse CDF from one such uniform.
"""
from __future__ import annotations

import torch

from .messages import SamplingParams

_MASK = (1 << 64) - 1
CHOICE = 1  # stream for the router's member choice
TOKEN = 2  # stream for the token draw


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def uniform(seed: int, step: int, stream: int) -> float:
    """A uniform in [0, 1) determined by (seed, step, stream) alone."""
    z = _splitmix64(_splitmix64(_splitmix64(seed & _MASK) ^ step) ^ stream)
    return (z >> 11) * 2.0**-53


def run_seed(seed: int, first_step: int) -> int:
    """A seed for an engine with its own generator (vLLM), from (seed, the run's first step) alone:
    a run repeats exactly; a run cut and replayed from its log starts another seed."""
    return _splitmix64(_splitmix64(seed & _MASK) ^ first_step) & ((1 << 63) - 1)


def pick(logp: torch.Tensor, params: SamplingParams, step: int) -> int:
    """Sample a token id from log-probabilities `logp` (vocab,) with temperature, top-k and top-p.

    The same function serves a member (ME: its own distribution) and the router (CE: the mixture),
    which is exactly where the two methods differ for T != 1, top-k and top-p.
    """
    if params.temperature == 0:
        return int(torch.argmax(logp))  # ties go to the lowest id: deterministic
    scaled = logp.double() / params.temperature
    if 0 < params.top_k < scaled.numel():
        kth = torch.topk(scaled, params.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)  # (vocab,) float64
    if params.top_p < 1.0:
        probs = _top_p(probs, params.top_p)
    return _inverse_cdf(probs, params.seed, step)


def pick_mixture(mixture: torch.Tensor, params: SamplingParams, step: int) -> int:
    """`pick` for CE's mixture, given as probabilities (vocab,) float64. With the default sampling
    (temperature 1, no top-k or top-p) the inverse CDF runs on them directly: a log and a softmax over
    the whole vocabulary per step less, on the router's critical path."""
    if params.temperature == 1 and params.top_k == 0 and params.top_p >= 1.0:
        return _inverse_cdf(mixture, params.seed, step)
    return pick(torch.log(mixture), params, step)


def _inverse_cdf(probs: torch.Tensor, seed: int, step: int) -> int:
    cdf = torch.cumsum(probs, dim=-1)
    u = uniform(seed, step, TOKEN) * float(cdf[-1])
    idx = int(torch.searchsorted(cdf, torch.tensor([u], dtype=cdf.dtype), right=True))
    return min(idx, probs.numel() - 1)


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p."""
    sorted_p, order = torch.sort(probs, descending=True, stable=True)
    before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass strictly ahead of each token
    keep_sorted = before < top_p
    keep = torch.zeros_like(keep_sorted).scatter(0, order, keep_sorted)
    return probs * keep

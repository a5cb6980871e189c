"""engine: sim's keys (docs/configuration.md, "Engines"), checked beside mixserve/config.py (the config
layer): a simulated member's step time, its vocabulary and its seed (actors/sim_engine.py).

    - {name: a, engine: sim, weight: 0.8, sim: {step_ms: 20, per_seq_ms: 0.5}}
"""
from __future__ import annotations

import hashlib
import math

DEFAULTS = {"step_ms": 20.0, "per_seq_ms": 0.5, "vocab_size": 32768, "context_length": 4096}
KEYS = (*DEFAULTS, "seed")
MIN_VOCAB = 512  # the end token, the chat markers, the 256 bytes and some words
MAX_VOCAB = 1 << 18


class SimError(ValueError):
    """A `sim:` key that is wrong; the config re-raises it as its own ConfigError."""


def seed_of(name: str) -> int:
    """A member's default seed, from its name: every replica of a member draws the same tokens (a
    session replayed onto a sibling goes on as it would have), and two members differ."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")


def parse_sim(raw, name: str, where: str) -> dict:
    """The member's `sim:` mapping with every key set: step_ms, per_seq_ms, vocab_size, context_length, seed."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise SimError(f"{where}.sim must be a mapping such as {{step_ms: 20, per_seq_ms: 0.5}}")
    if unknown := sorted(set(raw) - set(KEYS)):
        raise SimError(f"{where}.sim: unknown keys {unknown}; known keys: {', '.join(KEYS)}")
    sim = {**DEFAULTS, "seed": seed_of(name), **raw}
    for key in ("step_ms", "per_seq_ms"):
        value = sim[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise SimError(f"{where}.sim.{key} must be a number of milliseconds, 0 or more (got {value!r})")
        sim[key] = float(value)
    bounds = {"vocab_size": (MIN_VOCAB, MAX_VOCAB), "context_length": (2, 1 << 24), "seed": (0, (1 << 63) - 1)}
    for key, (low, high) in bounds.items():
        value = sim[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise SimError(f"{where}.sim.{key} must be an integer from {low} to {high} (got {value!r})")
    return sim

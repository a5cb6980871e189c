"""`mixserve soak --hostile SHARE`: requests a hostile client sends, among the others.

Each kind is a body no well-behaved client sends: wrong types, nesting, text that is not Unicode,
numbers at the edge of floating point, bodies and stop strings past their bounds, prompts past every
member's context. A hostile request passes when the server refuses it with one of its kind's statuses,
or answers 200 where the input is legal (then its text is checked like any other's); and the rest of
the load must not notice it (docs/serving.md, "Limits"). The body is made again from the kind's name,
so the soak's report holds the name, not megabytes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Hostile:
    name: str
    path: str  # /v1/completions or /v1/chat/completions
    expect: frozenset[int]  # the statuses that refuse it; 200 among them where the input is legal


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def body(kind: str, model: str, members: list[str]) -> bytes:
    """The raw HTTP body of a hostile request of this kind."""
    prompt = {"model": model, "prompt": "the cat", "max_tokens": 4, "seed": 1}
    chat = {"model": model, "messages": [{"role": "user", "content": "the cat"}], "max_tokens": 4, "seed": 1}
    if kind == "stop_number":
        return _json({**prompt, "stop": 5})
    if kind == "stop_bool_chat":
        return _json({**chat, "stop": True})
    if kind == "deep_nesting":
        return b"[" * 5000 + b"]" * 5000
    if kind == "lone_surrogate":  # valid JSON, not valid Unicode
        return _json(prompt)[:-1] + b', "stop": ["\\ud800"]}'
    if kind == "overflowing_weights":
        return _json({**prompt, "method": "ce", "weights": {m: 1e308 for m in members}})
    if kind == "tiny_temperature":
        return _json({**prompt, "method": "ce", "temperature": 1e-310})
    if kind == "huge_stops":
        return _json({**prompt, "stop": ["x" * (1 << 20)] * 4})
    if kind == "huge_body":
        return _json({**prompt, "prompt": "the cat " * (1 << 20)})  # 8 MiB
    if kind == "past_the_context":
        return _json({**prompt, "prompt": "the cat " * 3000})  # 6,000 tokens: past any test member's context
    if kind == "not_json":
        return b'{"model": '
    if kind == "n_too_large":
        return _json({**prompt, "n": 100000})
    raise ValueError(f"no hostile kind {kind!r}")


REFUSED = frozenset({400})
KINDS = [
    Hostile("stop_number", "/v1/completions", REFUSED),
    Hostile("stop_bool_chat", "/v1/chat/completions", REFUSED),
    Hostile("deep_nesting", "/v1/completions", REFUSED),
    Hostile("lone_surrogate", "/v1/completions", REFUSED),
    # Weights of 1e308 each: refused, or served as the mixture they name (equal weights).
    Hostile("overflowing_weights", "/v1/completions", frozenset({400, 200})),
    # Refused, or sampled as the limit it tends to: greedy.
    Hostile("tiny_temperature", "/v1/completions", frozenset({400, 200})),
    Hostile("huge_stops", "/v1/completions", frozenset({400, 413})),
    Hostile("huge_body", "/v1/completions", frozenset({413})),
    # Refused past a member's context (every test member's); a member with a longer one serves it.
    Hostile("past_the_context", "/v1/completions", frozenset({400, 200})),
    Hostile("not_json", "/v1/completions", REFUSED),
    Hostile("n_too_large", "/v1/completions", REFUSED),
]
BY_NAME = {k.name: k for k in KINDS}

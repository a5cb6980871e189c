"""Router <-> member messages: what actors/protocol.py's calls take and return.

The ones the data plane carries (SamplingParams, Segment, StepRequest, StepResult) are msgspec structs
laid out as arrays: actors/wire.py encodes them field by field in C and checks every field's type as it
decodes. The rest travel only as Ray calls' pickles and stay dataclasses."""
from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np


class _Wire(msgspec.Struct, array_like=True, frozen=True):
    """A data plane message: encoded as the array of its fields; immutable."""


class SamplingParams(_Wire):
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_tokens: int = 16
    stop: tuple[str, ...] = ()
    seed: int = 0


class Segment(_Wire):
    """Unseen log: token ids (shared tokenizer) or text bytes (the member tokenizes them)."""

    ids: tuple[int, ...] = ()
    text: bytes | None = None
    # ids this member sampled itself (a replay): its last one may still merge with text that follows,
    # as it could when it sampled them; other ids are fixed (docs/architecture.md invariant 1).
    own: bool = False


class StepRequest(_Wire):
    session: str
    delta: tuple[Segment, ...]
    first_step: int
    steps: int
    sampling: SamplingParams
    distribution: bool = False
    fresh: bool = False  # the delta starts at the prompt: (re)build the session from nothing
    heal: bool = False  # token healing after text from another tokenizer (actors/member.py)


class SessionLost(Exception):
    """The member holds no cache for this session (evicted, or the member restarted). The cache is
    soft state: the router replays the log with a fresh request (docs/architecture.md invariant 1)."""


class InputRefused(ValueError):
    """The member cannot take this request's input (longer than its context; anything its engine's
    own checks refuse): the request's fault, never the member's. It fails that request alone, as a 400
    naming the member (router/calls.py), and no other run on the member (docs/architecture.md
    invariant 8)."""


class StepResult(_Wire):
    tokens: list[int] = []  # msgspec copies a mutable default per instance
    pieces: list[bytes] = []
    finish: str = ""  # "" | "eos" | "length"
    probs: np.ndarray | None = None  # (vocab,) float32, only for distribution requests
    forwards: int = 0


def join(first: StepResult | None, then: StepResult) -> StepResult:
    """Two parts of one step as one: both parts' tokens, the later one's finish."""
    if first is None:
        return then
    return StepResult(first.tokens + then.tokens, first.pieces + then.pieces, then.finish, then.probs,
                      first.forwards + then.forwards)


@dataclass(frozen=True)
class Scores:
    """A member's teacher-forced log-probs of a token sequence's ids[1:] (echo and logprobs)."""

    token_logprobs: np.ndarray  # (L-1,) float32: log p(ids[t+1] | ids[:t+1])
    top_ids: np.ndarray | None = None  # (L-1, top) the most likely ids at each position
    top_logprobs: np.ndarray | None = None  # (L-1, top)
    rows: np.ndarray | None = None  # (L-1, vocab) float32, when the router mixes members


@dataclass(frozen=True)
class MemberInfo:
    """What the router needs to know about a loaded member."""

    name: str
    tokenizer: str  # fingerprint: members with equal fingerprints share token ids
    vocab_size: int
    context_length: int
    eos_ids: tuple[int, ...]
    missing_bytes: tuple[int, ...] = ()  # bytes it has no token for: it cannot follow text holding them

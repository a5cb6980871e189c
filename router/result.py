"""What a generation returns; `to_dict` is the `--json` shape the CLI and the server share."""
from __future__ import annotations

from collections import Counter
from contextlib import aclosing
from dataclasses import asdict, dataclass, field

from .logprobs import LogProbs


@dataclass(frozen=True)
class Choice:
    text: str
    token_ids: list[int]  # each in its producing member's vocabulary
    members: list[str]  # producer of each token ("mixture" under ce)
    finish_reason: str  # "stop" | "length"
    first_token_s: float | None = None
    stretches: list[tuple[str, str]] = field(default_factory=list)  # (member, text) runs, for display
    index: int = 0  # which of the n samples
    logprobs: LogProbs | None = None  # when the request asked for them


@dataclass
class Usage:
    prompt_tokens: int = 0  # the longest member tokenization of the prompt
    completion_tokens: int = 0
    member_forward_calls: int = 0
    router_round_trips: int = 0
    member_tokens: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerateResult:
    method: str
    seed: int
    choices: list[Choice]
    prompt_token_ids: dict[str, list[int]]
    usage: Usage
    timing: dict[str, float]
    prompt_text: str | None = None  # for echo: the prompt as text (token-id prompts decoded)
    weights: dict[str, float] = field(default_factory=dict)  # the mixture weights used (request, gate or config)

    def to_dict(self) -> dict:
        out = asdict(self)
        if out["prompt_text"] is None:
            out.pop("prompt_text")
        for choice in out["choices"]:
            choice.pop("first_token_s")
            choice.pop("stretches")
            choice.pop("index")
            if choice["logprobs"] is None:
                choice.pop("logprobs")
        return out


async def final(items) -> GenerateResult:
    """Drain a generation stream (chunks, then the result) and return the result; closes it either way."""
    async with aclosing(items):
        async for item in items:
            result = item
    return result


def summarize(choices: list[Choice], prompt_token_ids: dict[str, list[int]], forwards: int, trips: int) -> Usage:
    tokens = Counter(m for c in choices for m in c.members)
    return Usage(
        prompt_tokens=max(len(ids) for ids in prompt_token_ids.values()),
        completion_tokens=sum(len(c.token_ids) for c in choices),
        member_forward_calls=forwards,
        router_round_trips=trips,
        member_tokens=dict(tokens),
    )

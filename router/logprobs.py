"""Log-probabilities for `logprobs` and `echo` (/v1/completions): what evaluation harnesses score with.

After generation, the members score the whole sequence (prompt and completion) teacher-forced, one
forward each. One member (method single): its own log-probs. An ensemble (me and ce alike): the
mixture's, log sum_i lambda_i p_i, the distribution both methods sample from at temperature 1 (for
ME that is the point of the paper: a token's probability is the mixture's, whoever computed it).
Mixing needs one vocabulary, so an ensemble's log-probs need members that share a tokenizer. They are
the model's at temperature 1, before top-k and top-p, as OpenAI reports them.
"""
from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LogProbs:
    tokens: list[str]  # every token of prompt + completion, as text
    token_logprobs: list[float | None]  # None for the first token: nothing comes before it
    top_logprobs: list[dict[str, float] | None]  # the `top` most likely tokens at each position
    prompt_tokens: int  # the first this many are the prompt's


async def score(members: dict, weights: dict[str, float], pieces: list[bytes], ids: list[int], prompt_tokens: int,
                top: int, bound=lambda member, call: call) -> LogProbs:
    """`members`: name -> a MemberClient for the members in `weights` (normalised); `ids`: prompt and
    completion in their shared vocabulary. `bound(member, call)` waits for one member's answer (the
    router's per-member bound: an error names the member that did not answer)."""
    names = list(weights)
    if len(names) == 1:
        s = await bound(names[0], members[names[0]].score(ids, top, False))
        chosen = torch.from_numpy(s.token_logprobs).double()  # (L-1,)
        best_ids, best = torch.from_numpy(s.top_ids), torch.from_numpy(s.top_logprobs).double()  # (L-1, top)
    else:
        scores = await asyncio.gather(*(bound(m, members[m].score(ids, 0, True)) for m in names))
        vocab = min(s.rows.shape[1] for s in scores)
        rows = torch.stack([torch.from_numpy(s.rows[:, :vocab]).double() + math.log(weights[m])
                            for m, s in zip(names, scores)])  # (members, L-1, vocab)
        mixture = torch.logsumexp(rows, dim=0)  # (L-1, vocab)
        chosen = mixture.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        best, best_ids = mixture.topk(min(top, vocab), dim=-1)
    tops: list[dict[str, float] | None] = [None]
    for row_ids, row in zip(best_ids.tolist(), best.tolist()):
        alternatives: dict[str, float] = {}
        for t, lp in zip(row_ids, row):
            alternatives.setdefault(text_of(pieces, t), lp)  # two ids with one text: the likelier
        tops.append(alternatives)
    return LogProbs([text_of(pieces, t) for t in ids], [None] + chosen.tolist(), tops, prompt_tokens)


def text_of(pieces: list[bytes], token: int) -> str:
    """A token's text; a token that is part of a UTF-8 character is written as OpenAI writes it,
    `bytes:\\xe2\\x80`, so that distinct tokens stay distinct keys."""
    piece = pieces[token] if token < len(pieces) else b""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in piece)

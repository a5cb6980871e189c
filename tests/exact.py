"""Exact two-token distributions, computed from the member models directly (not through mixserve)."""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


@torch.inference_mode()
def two_token_tables(model_dir, prompt: str):
    """p(x1) (V,) and p(x2 | x1) (V, V) for one model, at temperature 1."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    vocab = len(tok)
    ids = torch.tensor([tok.encode(prompt)])  # (1, L)
    first = torch.softmax(model(ids).logits[0, -1, :vocab].double(), -1)  # (V,)
    batch = torch.cat([ids.repeat(vocab, 1), torch.arange(vocab)[:, None]], dim=1)  # (V, L+1)
    second = torch.softmax(model(batch).logits[:, -1, :vocab].double(), -1)  # (V, V)
    return first, second


def outcome_probs(tables, weights, eos: int, per_step: bool = True) -> dict[tuple[int, ...], float]:
    """P(continuation) for the mixture sampled per step (ME = CE), or one member per sequence."""
    if per_step:
        first = sum(w * f for w, (f, _) in zip(weights, tables))
        joint = first[:, None] * sum(w * s for w, (_, s) in zip(weights, tables))
    else:
        first = sum(w * f for w, (f, _) in zip(weights, tables))
        joint = sum(w * f[:, None] * s for w, (f, s) in zip(weights, tables))
    probs = {(eos,): float(first[eos])}
    joint[eos, :] = 0  # after an end-of-sequence token there is no second token
    nz = torch.nonzero(joint > 1e-12)
    probs.update({(int(i), int(j)): float(joint[i, j]) for i, j in nz})
    return probs


def p_value(samples, probs) -> float:
    """Chi-square p-value of sampled outcomes against exact probabilities (rare outcomes pooled)."""
    from scipy.stats import chisquare

    counts = {}
    for s in samples:
        counts[s] = counts.get(s, 0) + 1
    keys = [k for k, p in probs.items() if p * len(samples) >= 5]  # chi-square needs expected >= 5
    observed = [counts.get(k, 0) for k in keys] + [len(samples) - sum(counts.get(k, 0) for k in keys)]
    expected = [probs[k] * len(samples) for k in keys]
    expected.append(len(samples) - sum(expected))
    return chisquare(observed, expected).pvalue

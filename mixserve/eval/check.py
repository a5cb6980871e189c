"""`mixserve eval`'s statistical check, on the real members and through the server: ME's empirical
next-token distribution against the mixture sum_i lambda_i p_i that CE samples (docs/architecture.md, "The idea").

The observed side is many one-token ME samples. The expected side: members that share a tokenizer
give it directly, as the ensemble's own log-probs (`logprobs: 20`, the mixture's 20 likeliest
tokens). Across tokenizers, from each member's own log-probs: for the first token after a prompt a
text has probability sum_i lambda_i p_i(text) even then (each member reads the prompt in its own
tokens), known for the texts in every member's top 20. Those are the categories; the rest pool into one.
"""
from __future__ import annotations

import math
from collections import Counter

import requests

ALPHA = 1e-6  # a correct server fails this check once in a million runs
BATCH = 32  # samples per request: under max_concurrent_sessions


def mixture_check(url: str, ensemble: str, weights: dict[str, float] | None, prompt: str, one_tokenizer: bool,
                  samples: int = 2000, seed: int = 20261125) -> dict:
    """`weights` None: the server's own for this prompt (its gate's), sent with neither side's requests,
    so that the check covers the gate; each reply says the weights it used."""
    from scipy.stats import chisquare

    gated = weights is None
    if gated:
        weights = _post(url, {"model": ensemble, "prompt": prompt, "max_tokens": 1, "seed": seed})["weights"]
    sent = {} if gated else {"weights": weights}
    if one_tokenizer:
        expected = {text: math.exp(lp) for text, lp in _top(url, ensemble, prompt, sent).items()}
    else:
        tops = {m: _top(url, m, prompt) for m in weights}
        known = set.intersection(*(set(t) for t in tops.values()))
        expected = {text: sum(w * math.exp(tops[m][text]) for m, w in weights.items()) for text in known}
    observed: Counter = Counter()
    for start in range(0, samples, BATCH):
        body = {"model": ensemble, "prompt": prompt, "max_tokens": 1, "n": min(BATCH, samples - start),
                "seed": seed + start, "method": "me", "temperature": 1, **sent}
        reply = _post(url, body)
        if reply["weights"] != weights:
            raise RuntimeError(f"the server sampled with weights {reply['weights']}, not {weights}")
        observed.update(c["text"] if c["text"] in expected else None for c in reply["choices"])
    # Chi-square wants at least 5 expected per category: rarer texts join the pooled rest.
    keys = sorted((k for k in expected if expected[k] * samples >= 5), key=expected.get, reverse=True)
    observed[None] += sum(observed.pop(k, 0) for k in list(expected) if k not in keys)
    expected = {k: expected[k] for k in keys}
    f_exp = [expected[k] * samples for k in keys] + [(1 - sum(expected.values())) * samples]
    f_obs = [observed[k] for k in keys] + [observed[None]]
    # Fewer than two named texts (members that agree on nothing likely) leave nothing to test.
    p_value = float(chisquare(f_obs, f_exp).pvalue) if keys else None
    return {"prompt": prompt, "weights": weights, "gated": gated, "samples": samples, "categories": len(f_exp),
            "p_value": p_value,
            "alpha": ALPHA, "passed": None if p_value is None else p_value > ALPHA,
            "top": [{"text": k, "expected": expected[k], "observed": observed[k] / samples} for k in keys[:5]]}


def _top(url: str, model: str, prompt: str, extra: dict | None = None) -> dict[str, float]:
    """The model's 20 most likely next tokens after the prompt, by text (partial UTF-8 left out:
    the sampled side cannot tell those apart)."""
    body = {"model": model, "prompt": prompt, "max_tokens": 1, "logprobs": 20, "temperature": 0, **(extra or {})}
    top = _post(url, body)["choices"][0]["logprobs"]["top_logprobs"][0]
    return {text: lp for text, lp in top.items() if not text.startswith("bytes:")}


def _post(url: str, body: dict) -> dict:
    reply = requests.post(f"{url}/v1/completions", json=body, timeout=600)
    reply.raise_for_status()
    return reply.json()

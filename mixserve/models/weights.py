"""`mixserve weights fit`: mixture weights, and a gate that picks them from the prompt, fitted on a dev set.

Each member scores every dev reference teacher-forced (its `score` call: log p_i of each reference
token given the prompt and the tokens before it). Then:
- fixed weights: EM on the mixture's likelihood, the classic interpolation update (SRILM's
  compute-best-mix): lambda_i <- mean over tokens of lambda_i p_i / sum_j lambda_j p_j. Each step
  cannot lower the likelihood; the bits per byte of every step are printed.
- a clusters gate (mixserve/gate.py): the dev prompts in k clusters (tf-idf, spherical k-means), and each
  cluster's weights by the same EM, pulled toward the fixed weights by alpha tokens' worth of them so
  that a small cluster cannot drive a member to zero.
- a linear gate: softmax(bias + coefficients . tf-idf), fitted by gradient ascent on the same mixture
  likelihood (the gradient of a row's logit for member i is sum over its tokens of r_it - lambda_i,
  r_it the member's share of the token: the mixture-of-experts gating update), an L2 penalty on the
  coefficients;
- a posterior gate, measured beside them: lambda_i proportional to lambda_i p_i(prompt)^beta.
k, alpha, the L2 strength and beta are chosen by cross-validation on the dev rows (fit on all folds but
one, score that one, for each fold), and the report gives every candidate's held-out bits per byte
beside the fixed weights' and 1/n each; the gate written is the kind and setting that did best. A dev
file may put each row in a fold (`"fold": 0`, 1, 2, ...): the experts' dev split puts each phrasing of
its questions in its own, so that the cross-validation asks how a gate carries to a phrasing it was not
fitted on. Rows without one are dealt to the folds in turn, in a seeded order; with no fold named,
two.

The mixture is per token, so the members must share a tokenizer: members that do not are refused,
named (per-byte likelihoods would be an approximation of what ME samples, not the thing itself).
"""
from __future__ import annotations

import asyncio
import json
import math
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from mixserve.gate import ClusterGate, LinearGate, Words, terms

from .scores_file import Scored, load_scores, save_scores, scores_key

# Pseudo-tokens of the fixed weights in each cluster's EM, tried. Per token, not per row: a cluster of
# one-word answers (multiple choice) has few tokens, and 20 of the prior's once outweighed them.
ALPHAS = (1.0, 4.0, 20.0)
KS = (2, 4, 8, 16, 24, 32)  # cluster counts tried
BETAS = (0.01, 0.03, 0.1, 0.3, 1.0)  # posterior sharpness tried
L2S = (1e-7, 3e-7, 1e-6, 1e-5, 1e-4, 1e-3)  # the linear gate's penalty on its coefficients (per token of the dev references), tried
# The linear gate's Adam steps at rate 0.1. On the experts' dev split the held-out bits per byte at
# L2 1e-6 and above stop moving by 1,000; below it they still fell from 1,000 to 3,000 (docs/evaluation.md).
STEPS = 3000
MAX_FOLDS = 10  # a fold a dev row may name: 0 to 9
VOCABULARY = 300  # most frequent prompt words kept (those in at least two prompts)
LN2 = math.log(2)
FITTED = "# Fitted by `mixserve weights fit`"


class FitError(ValueError):
    pass


def read_rows(path: str | Path) -> list[dict]:
    if not Path(path).is_file():
        raise FitError(f"dev file {str(path)!r} not found (`mixserve models dev-split --out FILE` writes one)")
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise FitError(f"{path}:{n}: not JSON: {e}") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or \
                not isinstance(row.get("completion"), str) or not row["completion"]:
            raise FitError(f'{path}:{n}: each line must be {{"prompt": "...", "completion": "..."}} with a completion')
        fold = row.get("fold")
        if fold is not None and (not isinstance(fold, int) or isinstance(fold, bool) or not 0 <= fold < MAX_FOLDS):
            raise FitError(f"{path}:{n}: fold must be a whole number from 0 to {MAX_FOLDS - 1} (the "
                           f"cross-validation fold), not {fold!r}")
        rows.append(row)
    if len(rows) < 4:
        raise FitError(f"{path}: {len(rows)} rows; fitting needs at least 4 (two per cross-validation half)")
    return rows


async def score_rows(members: dict, rows: list[dict], progress: bool = True, parallel: int = 8) -> list[Scored]:
    """Every member's log-probs of every reference; `members` are router/clients.py clients of one tokenizer."""
    from tqdm import tqdm

    names = list(members)
    first = members[names[0]]
    bar = tqdm(total=len(rows), desc="score dev", unit="row", disable=not progress)
    gate = asyncio.Semaphore(parallel)

    async def one(row: dict) -> Scored:
        async with gate:
            context, whole = await asyncio.gather(first.prompt_ids(row["prompt"], None),
                                                  first.prompt_ids(row["prompt"] + row["completion"], None))
            start = next((i for i, (a, b) in enumerate(zip(context, whole)) if a != b), min(len(context), len(whole)))
            start = max(1, min(start, len(whole) - 1))  # at least one reference token, one before it
            scores = await asyncio.gather(*(members[m].score(whole, 0, False) for m in names))
            lp = np.stack([np.asarray(s.token_logprobs, dtype=np.float64) for s in scores])  # (M, L-1) for ids[1:]
            bar.update(1)
            return Scored(row["prompt"], lp[:, start - 1:], lp[:, : start - 1].sum(axis=1),
                          len(row["completion"].encode()), row.get("fold"))

    try:
        return list(await asyncio.gather(*(one(r) for r in rows)))
    finally:
        bar.close()


def mixture_bits(rows: list[Scored], weights_of) -> float:
    """Bits per byte of the references under the mixture whose weights `weights_of(row)` gives (M,)."""
    nats = sum(-_logsumexp(np.log(np.maximum(weights_of(r), 1e-300))[:, None] + r.logp).sum() for r in rows)
    return nats / LN2 / sum(r.bytes for r in rows)


def em(rows: list[Scored], start: np.ndarray, iterations: int = 200, prior: np.ndarray | None = None,
       alpha: float = 20.0, tol: float = 1e-7, report=None) -> np.ndarray:
    """Weights maximising the mixture's likelihood of the rows' references (with `prior`: alpha
    pseudo-tokens of it added to every update). `report(step, bits per byte)` sees each step."""
    w = np.asarray(start, dtype=np.float64)
    if not rows:
        return w
    logp = np.concatenate([r.logp for r in rows], axis=1)  # (M, N)
    total_bytes = sum(r.bytes for r in rows)
    last = math.inf
    for step in range(iterations):
        joint = np.log(np.maximum(w, 1e-300))[:, None] + logp
        lse = _logsumexp(joint)
        bits = -lse.sum() / LN2 / total_bytes
        if report is not None:
            report(step, bits)
        if last - bits < tol:
            break
        last = bits
        counts = np.exp(joint - lse).sum(axis=1)
        if prior is not None:
            counts = counts + alpha * prior
        w = counts / counts.sum()
    return w


def words(rows: list[Scored]) -> tuple[Words, np.ndarray]:
    """The vocabulary the rows' prompts share (words in at least two, the most frequent VOCABULARY),
    its idf, and each row's tf-idf vector (rows x vocabulary)."""
    docs = [terms(r.prompt) for r in rows]
    df = Counter(t for d in docs for t in set(d))
    vocabulary = tuple(t for t, c in sorted(df.items(), key=lambda x: (-x[1], x[0])) if c >= 2)[:VOCABULARY]
    w = Words(vocabulary, tuple(math.log((1 + len(docs)) / (1 + df[t])) + 1 for t in vocabulary))
    x = np.zeros((len(rows), len(vocabulary)))
    for i, r in enumerate(rows):
        for j, v in w.vector(r.prompt).items():
            x[i, j] = v
    return w, x


def fit_clusters(rows: list[Scored], names: list[str], fixed: np.ndarray, k: int, seed: int = 0,
                 alpha: float = 20.0) -> ClusterGate:
    probe, x = words(rows)
    vocabulary, idf = probe.vocabulary, probe.idf
    centroids = _kmeans(x, k, seed)
    labels = np.argmax(x @ centroids.T, axis=1) if len(centroids) else np.zeros(len(rows), dtype=int)
    weights = []
    for c in range(len(centroids)):
        members = [r for r, lab in zip(rows, labels) if lab == c]
        w = em(members, fixed, prior=fixed, alpha=alpha) if members else fixed
        weights.append({n: float(v) for n, v in zip(names, w)})
    return ClusterGate(vocabulary, idf, tuple(tuple(float(v) for v in c) for c in centroids), tuple(weights))


def fit_linear(rows: list[Scored], names: list[str], fixed: np.ndarray, l2: float, steps: int = STEPS,
               rate: float = 0.1) -> LinearGate:
    """softmax(b + W x) maximising the mean log-likelihood per reference token of the rows' references
    under their own weights, less l2/2 |W|^2; from W = 0, b = log(fixed) (the fixed weights for every
    prompt), by Adam on the exact gradient."""
    w, x = words(rows)
    logp = np.concatenate([r.logp for r in rows], axis=1)  # (M, N tokens)
    row_of = np.repeat(np.arange(len(rows)), [r.logp.shape[1] for r in rows])
    tokens = logp.shape[1]
    params = [np.zeros((x.shape[1], len(names))), np.log(np.maximum(fixed, 1e-6))]  # W, b
    moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
    for step in range(1, steps + 1):
        z = x @ params[0] + params[1]
        lam = np.exp(z - _logsumexp(z.T)[:, None])  # (rows, M)
        joint = np.log(np.maximum(lam[row_of].T, 1e-300)) + logp
        share = np.exp(joint - _logsumexp(joint))  # (M, N): each member's part of each token
        g = np.stack([np.bincount(row_of, weights=share[i], minlength=len(rows)) for i in range(len(names))], axis=1)
        g = (g - lam * np.bincount(row_of, minlength=len(rows))[:, None]) / tokens  # d mean log-lik / d z
        grads = [x.T @ g - l2 * params[0], g.sum(axis=0)]
        for p, grad, (m, v) in zip(params, grads, moments):  # Adam, ascending
            m *= 0.9
            m += 0.1 * grad
            v *= 0.999
            v += 0.001 * grad * grad
            p += rate * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    coefficients, bias = params
    return LinearGate(w.vocabulary, w.idf, {n: float(b) for n, b in zip(names, bias)},
                      {n: tuple(float(c) for c in coefficients[:, i]) for i, n in enumerate(names)})


def posterior(fixed: np.ndarray, beta: float):
    """lambda_i proportional to lambda_i p_i(prompt)^beta: the members' posterior given the prompt, sharpened or flattened."""
    def weights_of(row: Scored) -> np.ndarray:
        a = np.log(np.maximum(fixed, 1e-300)) + beta * row.prompt_logp
        return np.exp(a - _logsumexp(a[:, None])[0])
    return weights_of


def fit(config_path: str | Path, data_path: str | Path, out_path: str | Path, progress: bool = True,
        address: str | None = None, say=print, scores_path: str | Path | None = None) -> dict:
    """Score (or read the scores kept in `scores_path` for these members and rows), fit, choose, and
    write the config with the fitted weights and gate; returns the report."""
    from mixserve.config import load_config

    config = load_config(config_path)
    rows = read_rows(data_path)
    names = [m.name for m in config.members]
    if len(names) < 2:
        raise FitError("a config with one member has nothing to weigh")
    key = scores_key(config, rows)
    scored = load_scores(scores_path, key) if scores_path else None
    if scored is None:
        scored = _score(config, rows, names, progress, address)
        if scores_path:
            save_scores(scores_path, key, scored)
    else:
        say(f"the members' scores of these {len(rows)} rows, from {scores_path}")
    report = choose(scored, names, np.array([m.weight for m in config.members]), say)
    write_config(config_path, out_path, report)
    return report


def _score(config, rows: list[dict], names: list[str], progress: bool, address: str | None) -> list[Scored]:
    from mixserve.serving.ensemble import build_ensemble

    with build_ensemble(config, address=address) as ensemble:
        fingerprints = {m: ensemble.router.infos[m].tokenizer for m in names}
        if len(set(fingerprints.values())) > 1:
            raise FitError(f"members {', '.join(names)} do not share a tokenizer: the mixture is per token, and "
                           "their tokens do not line up; fit the weights of members that share one")
        return asyncio.run(score_rows({m: ensemble.router.members[m] for m in names}, rows, progress))


def choose(scored: list[Scored], names: list[str], configured: np.ndarray, say=print) -> dict:
    """Fixed weights by EM, then each gate candidate cross-validated; the report `fit` writes."""
    uniform = np.full(len(names), 1 / len(names))
    say("EM on the dev references (bits per byte):")
    fixed = em(scored, uniform, report=lambda step, bits: say(f"  step {step:3d}  {bits:.5f}"))
    alone = {n: mixture_bits(scored, lambda r, i=i: np.eye(len(names))[i]) for i, n in enumerate(names)}
    folds = split_folds(scored)
    trains = [[r for j, other in enumerate(folds) if j != i for r in other] for i in range(len(folds))]
    fitted = [em(train, uniform) for train in trains]  # each training set's fixed weights, where every candidate starts

    def held_out(make) -> float:
        """Bits per byte on each fold of a weighting `make(train, its fixed weights)` fitted on the
        other folds, pooled over all."""
        nats = 0.0
        for train, test, w in zip(trains, folds, fitted):
            nats += mixture_bits(test, make(train, w)) * LN2 * sum(r.bytes for r in test)
        return nats / LN2 / sum(r.bytes for r in scored)

    candidates = {"uniform": held_out(lambda train, w: lambda r: uniform),
                  "configured": held_out(lambda train, w: lambda r: configured),
                  "fixed": held_out(lambda train, w: lambda r: w)}
    gates = {}  # candidate name -> how to fit that gate on some rows from their fixed weights
    for k in KS:
        for alpha in ALPHAS:
            gates[f"clusters k={k} alpha={alpha:g}"] = \
                lambda rows, w, k=k, alpha=alpha: fit_clusters(rows, names, w, k, alpha=alpha)
    for l2 in L2S:
        gates[f"linear l2={l2:g}"] = lambda rows, w, l2=l2: fit_linear(rows, names, w, l2)
    for name, make in gates.items():
        candidates[name] = held_out(lambda train, w, make=make: gate_weights(make(train, w), names, w))
    for beta in BETAS:
        candidates[f"posterior beta={beta}"] = held_out(lambda train, w, beta=beta: posterior(w, beta))
    best = min(gates, key=candidates.__getitem__)
    gate = replace(gates[best](scored, fixed), default={n: float(w) for n, w in zip(names, fixed)})
    say(f"held-out bits per byte (each of the {len(folds)} folds of the dev rows scored by a fit on the others):")
    for name, bits in sorted(candidates.items(), key=lambda x: x[1]):
        say(f"  {bits:.5f}  {name}")
    leads = leading(scored, names, say)
    return {"members": names, "rows": len(scored), "bytes": sum(r.bytes for r in scored), "leads": leads,
            "fixed_weights": {n: float(w) for n, w in zip(names, fixed)},
            "bits_per_byte": {"alone": alone, "uniform": mixture_bits(scored, lambda r: uniform),
                              "fixed": mixture_bits(scored, lambda r: fixed),
                              "gate": mixture_bits(scored, gate_weights(gate, names, fixed))},
            "held_out_bits_per_byte": candidates, "gate_chosen": best, "gate": gate.to_dict()}


def split_folds(scored: list[Scored]) -> list[list[Scored]]:
    """The cross-validation folds: as many as the dev file names (two where it names none), each row
    in the fold the file names, the others dealt in turn in a seeded order (whatever the file's order)."""
    folds: list[list[Scored]] = [[] for _ in range(max([2] + [r.fold + 1 for r in scored if r.fold is not None]))]
    loose = [r for r in scored if r.fold is None]
    for r in scored:
        if r.fold is not None:
            folds[r.fold].append(r)
    for n, i in enumerate(np.random.default_rng(0).permutation(len(loose))):
        folds[n % len(folds)].append(loose[i])
    if empty := [str(i) for i, fold in enumerate(folds) if not fold]:
        raise FitError(f"no dev row is in fold {', '.join(empty)}: the cross-validation needs rows in every fold "
                       f"from 0 to {len(folds) - 1}")
    return folds


def gate_weights(gate, names: list[str], fallback: np.ndarray):
    """A row's weights (M,) as the served gate gives them for its prompt; `fallback` where the gate
    says none (a prompt with none of its words)."""
    def weights_of(row: Scored) -> np.ndarray:
        w = gate(row.prompt)
        return fallback if w is None else np.array([w.get(n, 0.0) for n in names])
    return weights_of


def leading(scored: list[Scored], names: list[str], say=print, dominant: float = 0.9) -> dict[str, int]:
    """How many dev rows each member gives the highest likelihood, said, with a warning where one
    member leads on nearly all: weights fitted for the mixture's likelihood then all but pick that
    member, and on prompts like these no weighting, fixed or gated, can do much better than it alone
    (an ensemble pays where each member leads on some kind of prompt: docs/evaluation.md)."""
    best = Counter(names[int(np.argmax(r.logp.sum(axis=1)))] for r in scored)
    leads = {n: best.get(n, 0) for n in names}
    say("rows each member scores best: " + ", ".join(f"{n} {c}" for n, c in leads.items()))
    top = max(names, key=leads.__getitem__)
    if leads[top] >= dominant * len(scored):
        say(f"note: {top} scores {leads[top]} of the {len(scored)} rows best; on prompts like these the "
            f"ensemble can do little better than {top} alone, whatever its weights")
    return leads


def write_config(config_path: str | Path, out_path: str | Path, report: dict) -> None:
    """The config as written, with the fitted weights and the gate's file named; paths relative to the new
    file's folder. Beside it: FILE.gate.json (the gate) and FILE.fit.json (the whole report)."""
    src, out = Path(config_path).resolve().parent, Path(out_path).resolve()
    raw = yaml.safe_load(Path(config_path).read_text())
    for m in raw["members"]:
        m["weight"] = round(report["fixed_weights"][m["name"]], 6)
        for key in ("model", "adapter"):
            value = m.get(key)
            if isinstance(value, str) and ":" not in value and not os.path.isabs(value):
                m[key] = os.path.relpath(src / value, out.parent)
    gate = out.with_suffix(".gate.json")  # beside the config, which names it: a fit's numbers are no reading
    raw["gate"] = gate.name
    out.parent.mkdir(parents=True, exist_ok=True)
    gate.write_text(json.dumps(report["gate"], indent=1) + "\n")
    kept = [line for line in Path(config_path).read_text().splitlines() if line.startswith("#")]
    kept = [line for line in kept if not line.startswith(FITTED)]  # a refit says its own numbers
    head = "".join(line + "\n" for line in kept) + (f"{FITTED} on {report['rows']} dev rows: bits per byte "
            f"{report['bits_per_byte']['fixed']:.4f} with these weights, {report['bits_per_byte']['gate']:.4f} "
            f"with the gate ({report['gate_chosen']})\n")
    out.write_text(head + yaml.safe_dump(raw, sort_keys=False, width=120))
    out.with_suffix(".fit.json").write_text(json.dumps(report, indent=1) + "\n")


def _kmeans(x: np.ndarray, k: int, seed: int, iterations: int = 50) -> np.ndarray:
    """Spherical k-means (unit rows, cosine), seeded k-means++ start; fewer centroids if fewer distinct rows."""
    rng = np.random.default_rng(seed)
    k = min(k, len({tuple(r) for r in x}))
    centroids = [x[rng.integers(len(x))]]
    while len(centroids) < k:
        d = np.clip(1 - np.max(x @ np.array(centroids).T, axis=1), 0, None)
        if d.sum() <= 0:
            break
        centroids.append(x[rng.choice(len(x), p=d / d.sum())])
    c = np.array(centroids)
    for _ in range(iterations):
        labels = np.argmax(x @ c.T, axis=1)
        new = np.array([x[labels == j].sum(axis=0) if (labels == j).any() else c[j] for j in range(len(c))])
        new /= np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12)
        if np.allclose(new, c):
            break
        c = new
    return c


def _logsumexp(a: np.ndarray) -> np.ndarray:
    """log sum exp over axis 0."""
    top = np.max(a, axis=0)
    return top + np.log(np.exp(a - top).sum(axis=0))

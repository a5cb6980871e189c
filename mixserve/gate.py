"""A prompt-conditioned gate: the mixture weights for one request, from its prompt alone, once, before
the first token (docs/architecture.md, "Weights that fit the prompt").

Because the weights are fixed for the whole request, ME still samples the mixture sum_i lambda_i(prompt)
p_i exactly, CE computes the same mixture, and the member schedule is still drawn ahead: the gate only
replaces the config's weights. (Gates that read hidden states at every token would break all three.)

Two kinds, both over the tf-idf of the prompt's words (mixserve/models/weights.py fits them):
- `clusters` puts the prompt in one of a few clusters of the dev prompts it was fitted on (nearest
  centroid) and answers with that cluster's weights, fitted by EM on the cluster's dev references;
- `linear` answers softmax(bias + coefficients . words): a linear model of the prompt, fitted to the
  dev references' mixture likelihood. Where the clusters gate matches a prompt to the dev prompts it
  looks most like (their names, their nouns), the linear one leans on the words that predicted the
  right member across all of them (numbers, times, the question's frame), so it carries to phrasings
  the dev set never used (docs/evaluation.md, "A gate that carries to new phrasings").
Each costs a dictionary lookup per word: no member is asked anything.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property

WORD = re.compile(r"\d+:\d\d|[a-z]+|\d+")
SMALLEST = 1e-3  # a gate's weight below this is dropped: CE would run a member for a thousandth of the mixture


def terms(text: str) -> list[str]:
    """A prompt's words, lower-cased; a number stands for its length in digits ("<2 digits>"), so
    that 47 and 83 look alike and 7 does not, and a time of day (3:40) for "<time>"."""
    return ["<time>" if ":" in w else f"<{len(w)} digits>" if w.isdigit() else w for w in WORD.findall(text.lower())]


@dataclass(frozen=True)
class Words:
    """The tf-idf vector of a prompt over a fitted vocabulary: what both kinds of gate read."""
    vocabulary: tuple[str, ...]
    idf: tuple[float, ...]
    default = None  # each kind's field (the last, so that it may have a default)
    kind = ""

    @cached_property
    def index(self) -> dict[str, int]:
        """Word -> its place in the vocabulary, built once per gate, not per request."""
        return {t: i for i, t in enumerate(self.vocabulary)}

    def vector(self, text: str) -> dict[int, float]:
        """The prompt's tf-idf vector (sparse, unit length) over the gate's vocabulary."""
        counts = Counter(self.index[t] for t in terms(text) if t in self.index)
        vec = {i: c * self.idf[i] for i, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {i: v / norm for i, v in vec.items()}

    def fallback(self) -> dict[str, float] | None:
        """The weights for a prompt with none of the gate's words: each kind's `default` (None: the
        config's), a member given nothing left out, as a zero request weight is."""
        return None if self.default is None else {m: w for m, w in self.default.items() if w > 0}

    def as_dict(self, **fields) -> dict:
        """The gate as a config's `gate:` holds it: its kind, words, own fields and default."""
        out = {"kind": self.kind, "vocabulary": list(self.vocabulary), "idf": [round(x, 6) for x in self.idf], **fields}
        if self.default is not None:
            out["default"] = {m: round(w, 6) for m, w in self.default.items()}
        return out


@dataclass(frozen=True)
class ClusterGate(Words):
    centroids: tuple[tuple[float, ...], ...]  # unit vectors over the vocabulary, one per cluster
    weights: tuple[dict[str, float], ...]  # per cluster, normalised
    default: dict[str, float] | None = None  # for a prompt with none of the words; None: the config's weights

    kind = "clusters"

    def cluster(self, text: str) -> int:
        return self._nearest(self.vector(text))

    def _nearest(self, vec: dict[int, float]) -> int:
        scores = [sum(v * c[i] for i, v in vec.items()) for c in self.centroids]
        return max(range(len(scores)), key=lambda k: (scores[k], -k))  # ties: the first cluster

    def __call__(self, text: str) -> dict[str, float] | None:
        """The prompt's weights (None: the config's); a member given nothing is left out, as a zero
        request weight is. A prompt with none of the gate's words is in no cluster: `default`."""
        if not (vec := self.vector(text)):
            return self.fallback()
        return {m: w for m, w in self.weights[self._nearest(vec)].items() if w > 0}

    def to_dict(self) -> dict:
        return self.as_dict(centroids=[[round(x, 6) for x in c] for c in self.centroids],
                            weights=[{m: round(w, 6) for m, w in ws.items()} for ws in self.weights])


@dataclass(frozen=True)
class LinearGate(Words):
    bias: dict[str, float]  # per member: its logit for every prompt
    coefficients: dict[str, tuple[float, ...]]  # per member: one logit per vocabulary word, times its tf-idf
    default: dict[str, float] | None = None  # for a prompt with none of the words; None: the config's weights

    kind = "linear"

    def logits(self, vec: dict[int, float]) -> dict[str, float]:
        return {m: b + sum(v * self.coefficients[m][i] for i, v in vec.items()) for m, b in self.bias.items()}

    def __call__(self, text: str) -> dict[str, float] | None:
        """softmax of the logits, the smallest dropped (SMALLEST); a prompt with none of the gate's
        words gets `default`, as under the clusters gate."""
        if not (vec := self.vector(text)):
            return self.fallback()
        z = self.logits(vec)
        top = max(z.values())
        e = {m: math.exp(v - top) for m, v in z.items()}
        total = sum(e.values())
        kept = {m: v for m, v in e.items() if v / total >= SMALLEST}
        return {m: v / sum(kept.values()) for m, v in kept.items()}

    def to_dict(self) -> dict:
        return self.as_dict(bias={m: round(b, 6) for m, b in self.bias.items()},
                            coefficients={m: [round(x, 6) for x in c] for m, c in self.coefficients.items()})


Gate = ClusterGate | LinearGate


class GateError(ValueError):
    pass


KEYS = {"clusters": {"centroids", "weights"}, "linear": {"bias", "coefficients"}}


def parse_gate(raw, members: list[str]) -> Gate:
    """A config's `gate:` mapping (as `mixserve weights fit` writes it), every mistake named."""
    if not isinstance(raw, dict) or raw.get("kind") not in KEYS:
        raise GateError("gate must be a mapping with kind: clusters or linear (as `mixserve weights fit` writes it)")
    unknown = set(raw) - {"kind", "vocabulary", "idf", "default"} - KEYS[raw["kind"]]
    if unknown:
        raise GateError(f"gate: unknown keys {sorted(unknown)}")
    vocabulary, idf = raw.get("vocabulary"), raw.get("idf")
    if not isinstance(vocabulary, list) or not all(isinstance(t, str) for t in vocabulary):
        raise GateError("gate.vocabulary must be a list of words")
    if not isinstance(idf, list) or len(idf) != len(vocabulary) or not all(_number(x) for x in idf):
        raise GateError("gate.idf must have one number per vocabulary word")
    default = raw.get("default")
    default = None if default is None else _member_weights(default, members, "gate.default")
    if raw["kind"] == "linear":
        return _linear(raw, members, tuple(vocabulary), tuple(float(x) for x in idf), default)
    centroids, weights = raw.get("centroids"), raw.get("weights")
    if not isinstance(centroids, list) or not centroids or any(
            not isinstance(c, list) or len(c) != len(vocabulary) for c in centroids):
        raise GateError("gate.centroids must be a non-empty list of vectors as long as the vocabulary")
    if not isinstance(weights, list) or len(weights) != len(centroids):
        raise GateError("gate.weights must have one member -> weight mapping per centroid")
    parsed = [_member_weights(ws, members, f"gate.weights[{k}]") for k, ws in enumerate(weights)]
    return ClusterGate(tuple(vocabulary), tuple(float(x) for x in idf),
                       tuple(tuple(float(x) for x in c) for c in centroids), tuple(parsed), default)


def _linear(raw: dict, members: list[str], vocabulary: tuple, idf: tuple, default) -> LinearGate:
    bias, coefficients = raw.get("bias"), raw.get("coefficients")
    if not isinstance(bias, dict) or set(bias) != set(members) or not all(_number(b) for b in bias.values()):
        raise GateError(f"gate.bias must give a number to each member: {', '.join(members)}")
    if not isinstance(coefficients, dict) or set(coefficients) != set(members) or any(
            not isinstance(c, list) or len(c) != len(vocabulary) or not all(_number(x) for x in c)
            for c in coefficients.values()):
        raise GateError(f"gate.coefficients must give each member ({', '.join(members)}) one number per vocabulary word")
    return LinearGate(vocabulary, idf, {m: float(bias[m]) for m in members},  # the config's member order
                      {m: tuple(float(x) for x in coefficients[m]) for m in members}, default)


def _number(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


def _member_weights(ws, members: list[str], where: str) -> dict[str, float]:
    if not isinstance(ws, dict) or set(ws) != set(members):
        raise GateError(f"{where} must give a weight to each member: {', '.join(members)}")
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0 for w in ws.values()) \
            or sum(ws.values()) <= 0:
        raise GateError(f"{where} must be non-negative numbers, not all zero")
    total = sum(ws.values())
    return {m: ws[m] / total for m in members}  # the config's member order (invariant 3)

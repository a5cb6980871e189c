"""A prompt-conditioned gate: the mixture weights for one request, from its prompt alone, once, before
the first token (docs/architecture.md, "Weights that fit the prompt").

Because the weights are fixed for the whole request, ME still samples the mixture sum_i lambda_i(prompt)
p_i exactly, CE computes the same mixture, and the member schedule is still drawn ahead: the gate only
replaces the config's weights. (Gates that read hidden states at every token would break all three.)

The kind shipped here, `clusters`, puts the prompt in one of a few clusters of the dev prompts it was
fitted on (tf-idf of its words, nearest centroid) and answers with that cluster's weights, fitted by EM
on the cluster's dev references (mixserve/models/weights.py). It costs a dictionary lookup per word: no
member is asked anything.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property

WORD = re.compile(r"[a-z]+|\d+")


def terms(text: str) -> list[str]:
    """A prompt's words, lower-cased; a number stands for its length in digits ("<2 digits>"), so
    that 47 and 83 look alike and 7 does not."""
    return [f"<{len(w)} digits>" if w.isdigit() else w for w in WORD.findall(text.lower())]


@dataclass(frozen=True)
class ClusterGate:
    vocabulary: tuple[str, ...]
    idf: tuple[float, ...]
    centroids: tuple[tuple[float, ...], ...]  # unit vectors over the vocabulary, one per cluster
    weights: tuple[dict[str, float], ...]  # per cluster, normalised
    default: dict[str, float] | None = None  # for a prompt with none of the words; None: the config's weights

    kind = "clusters"

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

    def cluster(self, text: str) -> int:
        return self._nearest(self.vector(text))

    def _nearest(self, vec: dict[int, float]) -> int:
        scores = [sum(v * c[i] for i, v in vec.items()) for c in self.centroids]
        return max(range(len(scores)), key=lambda k: (scores[k], -k))  # ties: the first cluster

    def __call__(self, text: str) -> dict[str, float] | None:
        """The prompt's weights (None: the config's); a member given nothing is left out, as a zero
        request weight is. A prompt with none of the gate's words is in no cluster: `default`."""
        vec = self.vector(text)
        weights = self.weights[self._nearest(vec)] if vec else self.default
        return None if weights is None else {m: w for m, w in weights.items() if w > 0}

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "vocabulary": list(self.vocabulary), "idf": [round(x, 6) for x in self.idf],
               "centroids": [[round(x, 6) for x in c] for c in self.centroids],
               "weights": [{m: round(w, 6) for m, w in ws.items()} for ws in self.weights]}
        if self.default is not None:
            out["default"] = {m: round(w, 6) for m, w in self.default.items()}
        return out


class GateError(ValueError):
    pass


def parse_gate(raw, members: list[str]) -> ClusterGate:
    """A config's `gate:` mapping (as `mixserve weights fit` writes it), every mistake named."""
    if not isinstance(raw, dict) or raw.get("kind") != "clusters":
        raise GateError("gate must be a mapping with kind: clusters (as `mixserve weights fit` writes it)")
    unknown = set(raw) - {"kind", "vocabulary", "idf", "centroids", "weights", "default"}
    if unknown:
        raise GateError(f"gate: unknown keys {sorted(unknown)}")
    vocabulary, idf, centroids, weights = (raw.get(k) for k in ("vocabulary", "idf", "centroids", "weights"))
    if not isinstance(vocabulary, list) or not all(isinstance(t, str) for t in vocabulary):
        raise GateError("gate.vocabulary must be a list of words")
    if not isinstance(idf, list) or len(idf) != len(vocabulary):
        raise GateError("gate.idf must have one number per vocabulary word")
    if not isinstance(centroids, list) or not centroids or any(
            not isinstance(c, list) or len(c) != len(vocabulary) for c in centroids):
        raise GateError("gate.centroids must be a non-empty list of vectors as long as the vocabulary")
    if not isinstance(weights, list) or len(weights) != len(centroids):
        raise GateError("gate.weights must have one member -> weight mapping per centroid")
    parsed = [_member_weights(ws, members, f"gate.weights[{k}]") for k, ws in enumerate(weights)]
    default = raw.get("default")
    return ClusterGate(tuple(vocabulary), tuple(float(x) for x in idf),
                       tuple(tuple(float(x) for x in c) for c in centroids), tuple(parsed),
                       None if default is None else _member_weights(default, members, "gate.default"))


def _member_weights(ws, members: list[str], where: str) -> dict[str, float]:
    if not isinstance(ws, dict) or set(ws) != set(members):
        raise GateError(f"{where} must give a weight to each member: {', '.join(members)}")
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0 for w in ws.values()) \
            or sum(ws.values()) <= 0:
        raise GateError(f"{where} must be non-negative numbers, not all zero")
    total = sum(ws.values())
    return {m: ws[m] / total for m in members}  # the config's member order (invariant 3)

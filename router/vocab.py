"""CE across tokenizers: one union vocabulary keyed by token bytes (docs/architecture.md, "Members with different
tokenizers"), as GaC and DeePEn align vocabularies.

Every member's token maps to the union entry with the same bytes (byte-level BPE and byte-fallback
pieces are exact bytes, actors/codec.py), so p(s) = sum_i lambda_i * p_i(s) for each byte string s,
where p_i(s) sums member i's tokens spelling s (Gemma's "a" and "<0x61>" are one entry). Every
end-of-sequence token maps to one EOS entry; special tokens with no text map nowhere (no mass), and so
do strings holding a byte that some member has no token for (it could not follow them).

What is approximate, and the docs say so: p_i(s) counts only member i's single tokens spelling s.
A string that member i would write as two tokens ("Hello" as "Hel" + "lo") gets no mass from i at
this step although i would produce it over two, so the union favours the member whose vocabulary has
the longer token at each step. Across a shared tokenizer the router keeps exact token ids instead.
"""
from __future__ import annotations

import hashlib

import torch

EOS = 0  # the union entry of every member's end-of-sequence tokens


class UnionVocab:
    def __init__(self, pieces: dict[str, list[bytes]], eos_ids: dict[str, frozenset[int]], missing: set[int] = frozenset()):
        """`pieces`: tokenizer fingerprint -> bytes per token id; `eos_ids`: fingerprint -> its eos ids;
        `missing`: bytes some member has no token for. Entries holding them get no mass: whatever the
        mixture samples, every member can spell."""
        index: dict[bytes, int] = {}
        self.pieces: list[bytes] = [b""]  # union id -> bytes; EOS has none
        self.maps: dict[str, torch.Tensor] = {}  # fingerprint -> (its vocab,) union ids, -1 = no text
        for fingerprint, own in pieces.items():
            ids = []
            for token, piece in enumerate(own):
                if token in eos_ids.get(fingerprint, ()):
                    ids.append(EOS)
                elif not piece:
                    ids.append(-1)
                else:
                    ids.append(index.setdefault(piece, len(self.pieces)))
                    if ids[-1] == len(self.pieces):
                        self.pieces.append(piece)
            self.maps[fingerprint] = torch.tensor(ids, dtype=torch.long)
        self.spellable = torch.tensor([not missing.intersection(p) for p in self.pieces], dtype=torch.float64)
        digest = hashlib.sha256("\0".join(sorted(pieces)).encode()).hexdigest()[:16]
        self.fingerprint = f"union:{digest}"  # no member's: each member gets a union token as text

    def mix(self, probs: list[tuple[str, float, torch.Tensor]]) -> torch.Tensor:
        """(fingerprint, weight, (vocab,) float64 probabilities) per member -> (union,) mixture, renormalised
        over the entries that have text or end the sequence."""
        mixture = torch.zeros(len(self.pieces), dtype=torch.float64)
        for fingerprint, weight, p in probs:
            ids = self.maps[fingerprint][: p.numel()]
            keep = ids >= 0
            mixture.index_add_(0, ids[keep], weight * p[: ids.numel()][keep])
        mixture *= self.spellable
        return mixture / mixture.sum()


class SharedVocab:
    """Members sharing one tokenizer: the mixture is over its token ids, exactly."""

    def __init__(self, fingerprint: str, pieces: list[bytes]):
        self.fingerprint = fingerprint
        self.pieces = pieces

    def mix(self, probs: list[tuple[str, float, torch.Tensor]]) -> torch.Tensor:
        vocab = min(p.numel() for _, _, p in probs)
        (_, w, first), *rest = probs
        mixture = first[:vocab] * w  # (vocab,)
        for _, w, p in rest:
            mixture.add_(p[:vocab], alpha=w)  # in place: one pass per member, no temporaries
        return mixture

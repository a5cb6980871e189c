"""Token ids <-> bytes for one member's tokenizer.

The router's log keeps generated text as bytes (docs/architecture.md, "Members with different tokenizers"), so
every token must map to its exact bytes, including the partial UTF-8 of byte-level and byte-fallback
tokens that `tokenizer.decode` would turn into U+FFFD. Two families cover the models we load:
byte-level BPE (GPT-2, SmolLM2, Llama-3, Qwen) and SentencePiece with byte fallback (Llama-2, Gemma).
"""
from __future__ import annotations

import bisect
import hashlib
import json
import re

import torch

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _gpt2_byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, codes)}


class TokenCodec:
    """Exact bytes for every token id, and text bytes back to ids."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        decoder = json.dumps(json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder"))
        byte_level = "ByteLevel" in decoder
        byte_decoder = _gpt2_byte_decoder()
        added = {i: t.content for i, t in tokenizer.added_tokens_decoder.items()}
        size = len(tokenizer)
        pieces: list[bytes] = []
        fallback: set[int] = set()  # byte-fallback tokens such as <0x61>
        for i, tok in enumerate(tokenizer.convert_ids_to_tokens(list(range(size)))):
            if i in added or tok is None:
                pieces.append((added.get(i) or "").encode())
            elif byte_level:
                pieces.append(bytes(byte_decoder[c] for c in tok if c in byte_decoder))
            elif m := _BYTE_TOKEN.match(tok):
                pieces.append(bytes([int(m.group(1), 16)]))
                fallback.add(i)
            else:
                pieces.append(tok.replace("\u2581", " ").encode())
        self.pieces = pieces
        # Single-byte tokens, preferring a plain token ("a") over its byte-fallback twin (<0x61>).
        self.byte_ids: dict[int, int] = {}
        singles = [i for i, p in enumerate(pieces) if len(p) == 1 and i not in added]
        for i in sorted(singles, key=lambda i: i in fallback):
            self.byte_ids.setdefault(pieces[i][0], i)
        self._sorted: tuple[list[int], list[bytes]] | None = None  # for `extending`, built when first needed
        # Bytes with no token of their own. Real vocabularies leave out some that text never holds
        # (SmolLM2 has none for 0xc0, 0xc1, 0xf5-0xff, nor for some control characters).
        self.missing_bytes = tuple(b for b in range(256) if b not in self.byte_ids)
        self.fingerprint = hashlib.sha256(b"\0".join(pieces)).hexdigest()[:16]

    def extending(self, prefix: bytes) -> torch.Tensor:
        """Ids whose bytes start with `prefix` (token healing): one range of the pieces sorted by bytes."""
        if self._sorted is None:
            order = sorted(range(len(self.pieces)), key=self.pieces.__getitem__)
            self._sorted = (order, [self.pieces[i] for i in order])
        order, keys = self._sorted
        start = bisect.bisect_left(keys, prefix)
        end = start
        while end < len(keys) and keys[end].startswith(prefix):
            end += 1
        return torch.tensor(order[start:end], dtype=torch.long)

    def piece(self, token: int) -> bytes:
        return self.pieces[token] if 0 <= token < len(self.pieces) else b""

    def encode(self, data: bytes) -> list[int]:
        """Ids whose pieces concatenate to `data`: valid UTF-8 through the tokenizer, any other
        bytes (a character split between two members' tokens) as byte tokens."""
        ids: list[int] = []
        for chunk, valid in _utf8_runs(data):
            if valid:
                ids.extend(self._encode_text(chunk))
            else:
                ids.extend(self._encode_raw(chunk))
        return ids

    def _encode_text(self, chunk: bytes) -> list[int]:
        ids = self.tokenizer.encode(chunk.decode(), add_special_tokens=False)
        if b"".join(self.piece(i) for i in ids) == chunk:
            return ids
        # Some tokenizers add a prefix space or normalise; bytes are the truth, so spell it out.
        return self._encode_raw(chunk)

    def _encode_raw(self, chunk: bytes) -> list[int]:
        missing = sorted({b for b in chunk if b not in self.byte_ids})
        if missing:
            raise ValueError(f"tokenizer has no byte tokens for {bytes(missing)!r}; cannot represent it")
        return [self.byte_ids[b] for b in chunk]


def _utf8_runs(data: bytes):
    """Split into (chunk, is_valid_utf8) runs."""
    start = 0
    while start < len(data):
        try:
            data[start:].decode()
            yield data[start:], True
            return
        except UnicodeDecodeError as e:
            if e.start > 0:
                yield data[start : start + e.start], True
            bad_end = start + e.end
            yield data[start + e.start : bad_end], False
            start = bad_end

"""Packed forwards: several sessions' new tokens in one model call, each attending only to its own
keys and values (the variable-length layout of vLLM and of transformers' `sdpa_paged`).

Why our own and not transformers' continuous batching: that runs whole generations under its own
sampler and scheduler. A member here holds sessions that pause while other members compute, receive
deltas from the router, roll back on re-tokenization, and sample with the router's counter-based RNG.
So we register one attention function and keep the keys and values ourselves; the model's linear
layers see every session's tokens as one (1, tokens) batch.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ATTENTION = "mixserve_packed"


class KV:
    """One session's keys and values for every layer, in buffers that grow by doubling: a step copies
    only its new tokens in, and a rollback is just a shorter length (the caller's `cached`)."""

    def __init__(self):
        self.keys: dict[int, torch.Tensor] = {}  # layer -> (kv_heads, capacity, head_dim)
        self.values: dict[int, torch.Tensor] = {}

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Put k, v (kv_heads, n, head_dim) at positions start.. and return positions [0, start + n)."""
        end = start + k.shape[1]
        old_k = self.keys.get(layer)
        if old_k is None or old_k.shape[1] < end:
            capacity = max(end, 2 * old_k.shape[1] if old_k is not None else 32)
            new_k = k.new_empty(k.shape[0], capacity, k.shape[2])
            new_v = v.new_empty(v.shape[0], capacity, v.shape[2])
            if old_k is not None:
                new_k[:, :start] = old_k[:, :start]
                new_v[:, :start] = self.values[layer][:, :start]
            self.keys[layer], self.values[layer] = new_k, new_v
        self.keys[layer][:, start:end] = k
        self.values[layer][:, start:end] = v
        return self.keys[layer][:, :end], self.values[layer][:, :end]


@dataclass(frozen=True)
class Span:
    """One session's new tokens in the packed batch (not a message's Segment: that is unseen log)."""

    kv: KV
    start: int  # position of the span's first token in its session
    offset: int  # where its tokens sit in the packed batch
    length: int


@dataclass(frozen=True)
class Pack:
    spans: tuple[Span, ...]
    per_query: bool  # every query alone, as in decode: a replayed prefill gives bit-identical numbers


_PACK: contextvars.ContextVar[Pack] = contextvars.ContextVar("mixserve_pack")


@contextlib.contextmanager
def packing(spans: tuple[Span, ...], per_query: bool = False):
    token = _PACK.set(Pack(spans, per_query))
    try:
        yield
    finally:
        _PACK.reset(token)


def packed_attention(module, query, key, value, attention_mask, scaling=None, sliding_window=None, softcap=None,
                     **kwargs):
    """query (1, heads, tokens, dim); key and value (1, kv_heads, tokens, dim): every span's new
    tokens. Each span attends to its own session only, so a session's numbers never depend on
    who shares the batch."""
    if softcap is not None:
        raise NotImplementedError("attention logit soft-capping (Gemma 2) is not supported")
    pack = _PACK.get()
    outputs = []
    for seg in pack.spans:
        span = slice(seg.offset, seg.offset + seg.length)
        k, v = seg.kv.write(module.layer_idx, seg.start, key[0, :, span], value[0, :, span])
        if seg.length == 1 or pack.per_query:
            for i in range(seg.length):  # a decode step, or a prefill computed as decode steps would be
                end = seg.start + i + 1
                lo = max(0, end - sliding_window) if sliding_window else 0  # as transformers' sliding window
                q = query[:, :, seg.offset + i : seg.offset + i + 1]
                outputs.append(F.scaled_dot_product_attention(q, k[None, :, lo:end], v[None, :, lo:end],
                                                              scale=scaling, enable_gqa=True))
            continue
        end = seg.start + seg.length
        q_pos = torch.arange(seg.start, end, device=query.device)[:, None]
        k_pos = torch.arange(end, device=query.device)[None]
        mask = k_pos <= q_pos
        if sliding_window:
            mask &= k_pos > q_pos - sliding_window
        outputs.append(F.scaled_dot_product_attention(query[:, :, span], k[None], v[None], attn_mask=mask,
                                                      scale=scaling, enable_gqa=True))
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, packed_attention)

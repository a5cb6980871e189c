"""Batch-invariant matrix products for `batch_invariant: true` (docs/architecture.md invariant 3).

BLAS libraries choose their kernel, blocking and so the order of a dot product's sums from the shape of
the call: the same row multiplied alone or among 20 others can differ in its last bit (MKL on Xeons
with AVX-512 does so at any number of rows). Inside `tiles()`, every linear layer multiplies its rows
in tiles of exactly TILE rows, the last one padded with zeros, so each row always goes through the
same call shape, whoever shares the batch. The rest of the forward is row-wise already (norms,
rotary, activations), and attention runs one query at a time (actors/packed.py, per_query).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

TILE = 8  # rows per matrix product; a decode step costs about the same at 1 and 8 rows


class _Tiles(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.linear:
            return func(*args, **kwargs)
        x, weight, *rest = args
        bias = rest[0] if rest else kwargs.get("bias")
        rows = x.reshape(-1, x.shape[-1])  # (n, in)
        n = rows.shape[0]
        if n % TILE:
            rows = torch.cat([rows, rows.new_zeros(TILE - n % TILE, rows.shape[1])])
        out = torch.cat([F.linear(tile, weight, bias) for tile in rows.split(TILE)])[:n]  # (n, out)
        return out.reshape(*x.shape[:-1], out.shape[-1])


def tiles() -> TorchFunctionMode:
    return _Tiles()

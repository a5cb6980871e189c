"""LoRA adapters applied at run time, several on one base (docs/architecture.md, "Co-located experts").

Members that name one base with different adapters (and the base itself) can share one copy of the
base: each target linear layer keeps its weight once and every adapter's two small matrices beside it,
and each token of a packed forward says which adapter it goes through (0: none, the base alone). So a
forward can hold rows of every member of the group at once, each with its own KV.

A member alone with an adapter runs the same code with one adapter, rather than a merged copy of the
weights: the two layouts then compute every row with the same operations, and a seeded request's text
is the same in both (tests/actors/test_colocate.py).

Reads PEFT's adapter folder (adapter_config.json, adapter_model.safetensors) itself, the LoRA kinds
train-expert writes: plain LoRA, optionally rsLoRA, on any linear layers. Anything else is refused.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from mixserve.references import ModelReferenceError

# Which adapter each token of the running forward goes through: an int for all of them, or each adapter's
# token positions (index -> a tensor of positions), found once per forward rather than in every layer.
# Set per forward (a context variable, so each worker thread sees its own).
ROUTE: contextvars.ContextVar[int | dict[int, torch.Tensor]] = contextvars.ContextVar("lora_route", default=0)
_PREFIX = "base_model.model."
_REFUSED = ("use_dora", "lora_bias", "modules_to_save", "rank_pattern", "alpha_pattern", "layer_replication")


class LoraLinear(torch.nn.Module):
    """A linear layer and the low-rank updates of the adapters that touch it, by index."""

    def __init__(self, base: torch.nn.Linear):
        super().__init__()
        self.base = base
        self.updates: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}  # index -> (A, B, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        route = ROUTE.get()
        if isinstance(route, int):
            if route in self.updates:
                a, b, scale = self.updates[route]
                y = y + scale * F.linear(F.linear(x, a), b)
            return y
        for index, (a, b, scale) in self.updates.items():
            if (at := route.get(index)) is not None:  # this adapter's tokens (dim -2 of x)
                y[..., at, :] += scale * F.linear(F.linear(x[..., at, :], a), b)
        return y


@contextlib.contextmanager
def routing(route: int | list[int], device: str = "cpu"):
    """Route a forward's tokens: one adapter index for all, or one per token."""
    if not isinstance(route, int) and len(indices := set(route)) <= 1:
        route = indices.pop() if indices else 0
    if not isinstance(route, int):
        tokens = torch.tensor(route, device=device)
        route = {index: (tokens == index).nonzero()[:, 0] for index in indices}
    token = ROUTE.set(route)
    try:
        yield
    finally:
        ROUTE.reset(token)


def attach(model: torch.nn.Module, adapter: Path, index: int) -> None:
    """Load a PEFT LoRA folder onto `model` as adapter `index` (1, 2, ...), wrapping its target layers."""
    config, weights = _read(adapter)
    scale = config["lora_alpha"] / (config["r"] ** 0.5 if config.get("use_rslora") else config["r"])
    modules = dict(model.named_modules())
    dtype = next(model.parameters()).dtype
    for key, a in weights.items():
        if not key.endswith(".lora_A.weight"):
            continue
        path = key[len(_PREFIX):-len(".lora_A.weight")]
        layer = modules.get(path)
        b = weights.get(key.replace("lora_A", "lora_B"))
        if isinstance(layer, torch.nn.Linear):
            layer = _wrap(model, path, layer)
            modules[path] = layer
        if not isinstance(layer, LoraLinear) or b is None or a.shape != (config["r"], layer.base.in_features) \
                or b.shape != (layer.base.out_features, config["r"]):
            raise ModelReferenceError(f"adapter {str(adapter)!r} does not fit the model: {path} has no linear "
                                      f"layer for rank {config['r']} matrices {tuple(a.shape)}")
        layer.updates[index] = (a.to(dtype), b.to(dtype), scale)


def _read(adapter: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    try:
        config = json.loads((adapter / "adapter_config.json").read_text())
        weights = load_file(adapter / "adapter_model.safetensors")
    except (OSError, ValueError) as e:
        raise ModelReferenceError(f"adapter {str(adapter)!r} is not a PEFT LoRA folder: {e}") from None
    if config.get("peft_type") != "LORA" or any(config.get(key) for key in _REFUSED):
        raise ModelReferenceError(f"adapter {str(adapter)!r}: only plain LoRA (or rsLoRA) adapters run here, "
                                  f"not {config.get('peft_type')} with {[k for k in _REFUSED if config.get(k)]}")
    return config, {k: v for k, v in weights.items() if k.startswith(_PREFIX)}


def _wrap(model: torch.nn.Module, path: str, layer: torch.nn.Linear) -> LoraLinear:
    parent, _, name = path.rpartition(".")
    wrapped = LoraLinear(layer)
    setattr(model.get_submodule(parent) if parent else model, name, wrapped)
    return wrapped

"""A base model loaded once with the LoRA adapters of every member that runs on it (docs/architecture.md,
"Co-located experts"): one per member actor, or one per group actor shared by its members' cores.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from . import lora, packed
from .loading import ModelSource, load


class Weights:
    def __init__(self, source: ModelSource, dtype: str = "auto", threads: int = 1):
        """Load `source`'s base (its adapter, if any, is attached by `adapter`, not merged)."""
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu":
            # One simulated accelerator per member (docs/architecture.md, "Environment facts").
            torch.set_num_threads(threads)
        self.base = dataclasses.replace(source, adapter=None)
        self.model, self.tokenizer = load(self.base, dtype, self.device)
        packed.register()
        self.model.set_attn_implementation(packed.ATTENTION)
        self.adapters: dict[Path, int] = {}  # folder -> its index in lora.ROUTE (0 is the base alone)

    def adapter(self, source: ModelSource) -> int:
        """The route index of `source`'s adapter (0 for none), attached on first use."""
        if dataclasses.replace(source, adapter=None) != self.base:
            raise ValueError(f"{source} is not a member of this base ({self.base})")
        if not source.adapter:
            return 0
        folder = Path(source.adapter).resolve()
        if folder not in self.adapters:
            lora.attach(self.model, folder, len(self.adapters) + 1)
            self.adapters[folder] = len(self.adapters) + 1
        return self.adapters[folder]

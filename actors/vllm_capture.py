"""A vLLM logits processor that hands over a request's whole next-token row (CE on vLLM members).

vLLM returns full-vocabulary log-probs as one Python object per token (811 ms per step measured on a
49k vocabulary); CE needs the row as one tensor. A request that sets
`extra_args={"mixserve_capture": key}` has its raw logits (float32, before temperature, penalties or
any mask: this processor runs after `allowed_token_ids`, and capture requests set none) copied into
ROWS[key] in the sampler. It needs the engine in this process: actors/vllm_engine.py runs vLLM's
engine core in the member's own process, which is also what keeps each run's overhead low.
Imported only inside a vLLM member.
"""
from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

KEY = "mixserve_capture"
ROWS: dict[str, torch.Tensor] = {}  # key -> (padded vocab,) float32, taken by the engine


class CaptureRows(LogitsProcessor):
    def __init__(self, vllm_config, device, is_pin_memory):
        self.rows: dict[int, str] = {}  # batch index -> capture key

    def is_argmax_invariant(self) -> bool:
        return False  # argmax-invariant processors are skipped for greedy batches; this must always run

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.rows.pop(index, None)
        for index, params, _, _ in batch_update.added:
            key = (params.extra_args or {}).get(KEY) if params is not None else None
            if key is None:
                self.rows.pop(index, None)
            else:
                self.rows[index] = key
        for a, b, direction in batch_update.moved:
            key_a, key_b = self.rows.pop(a, None), self.rows.pop(b, None)
            if key_a is not None:
                self.rows[b] = key_a
            if direction == MoveDirectionality.SWAP and key_b is not None:
                self.rows[a] = key_b

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        for index, key in self.rows.items():
            ROWS[key] = logits[index].float().cpu()
        return logits

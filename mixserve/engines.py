"""The member engines, by the name a config gives them (docs/architecture.md, "Engines").

The config (mixserve/config.py), placement (cluster/placement.py), build_ensemble (mixserve/serving/ensemble.py) and
the bench ask this table what an engine is; none of them names one. Adding an engine (SGLang, say) is
its engine in one file in actors/, implementing actors/protocol.py's Member, and one row (the member's
Ray actor, actors/host.py's MemberHost, is the same for every engine):

    "sglang": EngineKind("SGLang", "sglang_engine:SglangEngine", options={"mem_fraction_static": float},
                         library="sglang"),
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field

DEFAULT = "transformers"


@dataclass(frozen=True)
class EngineKind:
    """What an engine is to the config, placement and the bench (not the member engine itself)."""

    label: str  # its name in messages ("vLLM")
    engine: str  # "module:Class" in mixserve.actors: the member's engine, imported only in its actor (actors/host.py)
    core: str | None = None  # "module:Class": the same member in the router's process (tests, ce-sequential)
    keys: tuple[str, ...] = ()  # member keys that only this engine honours, passed to it by name
    refusals: dict[str, str] = field(default_factory=dict)  # why it refuses another engine's keys
    options: dict[str, type] = field(default_factory=dict)  # its engine_options and their types, passed as `options`
    library: str | None = None  # the package it runs on beyond mixserve's own dependencies
    # A member spanning several devices (MemberConfig.devices) runs its workers as Ray actors of the
    # engine's own, one GPU each: the member's actor holds none.
    spans_devices: bool = False
    runs_model: bool = True  # False: its member takes no `model` (engine sim's draws tokens from a closed form)

    def engine_class(self) -> type:
        return _load(self.engine)

    def core_class(self) -> type | None:
        return None if self.core is None else _load(self.core)

    def installed(self) -> bool:
        return self.library is None or importlib.util.find_spec(self.library) is not None

    def args(self, member) -> dict:
        """Its own constructor arguments for a MemberConfig, beyond the ones every engine takes
        (cluster/placement.py's member_args)."""
        own = {key: getattr(member, key) for key in self.keys}
        return dict(own, options=dict(member.engine_options)) if self.options else own


ENGINES: dict[str, EngineKind] = {
    "transformers": EngineKind("transformers", "engine:MemberEngine", core="member:MemberCore",
                           keys=("max_cached_tokens", "batch_invariant")),
    "vllm": EngineKind("vLLM", "vllm_engine:VllmEngine", library="vllm", spans_devices=True, refusals={
        "batch_invariant": "vLLM's kernels are not batch-invariant; use engine: transformers",
        "max_cached_tokens": "vLLM bounds its KV cache itself: engine_options.kv_cache_space_gib (CPU) or "
                             "gpu_memory_utilization (GPU)"},
        # Passed through to vLLM's EngineArgs (kv_cache_space_gib: the CPU KV cache, VLLM_CPU_KVCACHE_SPACE;
        # streaming_input: false runs every run as a new request, actors/vllm_streams.py).
        options={"streaming_input": bool, "tensor_parallel_size": int, "pipeline_parallel_size": int, "max_model_len": int,
                 "gpu_memory_utilization": float, "enforce_eager": bool, "block_size": int,
                 "kv_cache_space_gib": float, "max_num_batched_tokens": int, "quantization": str,
                 "distributed_executor_backend": str}),
    # No model: a clock and seeded tokens (actors/sim_engine.py), its keys under `sim:` (mixserve/sim.py).
    "sim": EngineKind("sim", "sim_engine:SimEngine", core="sim_core:SimCore", keys=("sim",), runs_model=False,
                      refusals={"max_cached_tokens": "a sim member keeps no KV cache; bound it with max_sessions",
                                "batch_invariant": "a sim member's tokens never depend on the batch"}),
}


def _load(where: str) -> type:
    module, name = where.split(":")
    return getattr(importlib.import_module(f"mixserve.actors.{module}"), name)

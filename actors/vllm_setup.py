"""A vLLM member's start (docs/architecture.md, "Engines", vllm): vLLM's process-wide settings, its
engine arguments from the member's config, and the warm-up that runs each sampling path once before
the member says it is ready (docs/studies/vllm-first-use.md). actors/vllm_engine.py runs the engine.
"""
from __future__ import annotations

import os

from .loading import ModelSource, chat_fixup, model_dir
from .sessions import eos_ids

# On CPU: no graph compilation (40-90 s per start on 2 cores), the smallest block the CPU attention
# takes (prefix caching reuses whole blocks: ME's catch-up recomputes the partial last one).
CPU_DEFAULTS = {"enforce_eager": True, "block_size": 32}
CPU_MAX_MODEL_LEN = 4096  # unless max_model_len says otherwise; one prefill chunk holds it
ONEDNN_CACHE = 16  # compiled oneDNN matmuls kept per process (each batch shape compiles its own)
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM takes
KV_SPACE_GIB = 1  # the CPU KV cache per member unless kv_cache_space_gib says otherwise (on a GPU: gpu_memory_utilization)


def engine_args(source: ModelSource, dtype: str, max_num_seqs: int, options: dict, adapters: list[str] = ()):
    """(device, vLLM's EngineArgs, the tokenizer, the end token ids) for an engine of `source`; `options`
    are the config's engine_options less streaming_input; `adapters`: the LoRA adapter folders its
    requests may name (actors/vllm_stepper.py). Sets vLLM's environment first (before its import)."""
    if options.get("tensor_parallel_size", 1) * options.get("pipeline_parallel_size", 1) > 1:
        # Workers on several GPUs, maybe nodes: Ray places them, one GPU each (cluster/placement.py).
        options.setdefault("distributed_executor_backend", "ray")
    device = _environment()
    space = options.pop("kv_cache_space_gib", KV_SPACE_GIB if device == "cpu" else None)
    if space is not None:
        options["kv_cache_memory_bytes"] = int(space * (1 << 30))
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig
    from vllm.engine.arg_utils import EngineArgs

    from . import vllm_capture

    folder = model_dir(source)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ends = chat_fixup(source, tokenizer)
    try:
        generation_eos = GenerationConfig.from_pretrained(folder).eos_token_id
    except OSError:  # no generation_config.json
        generation_eos = None
    generation_eos = [generation_eos] if isinstance(generation_eos, int) else list(generation_eos or [])
    if device == "cpu":
        longest = getattr(AutoConfig.from_pretrained(folder), "max_position_embeddings", None) or CPU_MAX_MODEL_LEN
        options = {**CPU_DEFAULTS, "max_model_len": min(longest, CPU_MAX_MODEL_LEN), **options}
        if options["enforce_eager"]:
            no_compile()
    # One prefill chunk holds a whole context: vLLM's CPU generators cannot rewind a partial
    # prefill's discarded sample (seeded requests fail with "CPU Generator does not use offset").
    options.setdefault("max_num_batched_tokens", max(options.get("max_model_len") or 0, 8192))
    if adapters:
        options = {**options, **lora_options(adapters)}
        if device == "cpu":
            _cpu_lora_logits()
    args = EngineArgs(model=str(folder), dtype=_dtype(dtype, device), skip_tokenizer_init=True,
                      enable_prefix_caching=True, max_num_seqs=max_num_seqs, max_logprobs=-1,
                      logits_processors=[vllm_capture.CaptureRows], disable_log_stats=True, **options)
    return device, args, tokenizer, eos_ids(generation_eos + ends, tokenizer)


def lora_options(adapters: list[str]) -> dict:
    """vLLM's LoRA settings for these adapter folders: a slot each and one spare, and the smallest rank
    vLLM offers that holds the largest. The spare is for the rows without an adapter: vLLM's CPU LoRA
    ops (lora/ops/torch_ops) pick a row's adapter by indexing the stacked weights with its slot, and a
    row without one has slot -1, which in torch is the last slot: a base row batched with adapters' rows
    would go through whichever adapter held it. The spare last slot is never filled, so it adds zero.
    (The GPU kernels skip slot -1; there the spare costs one slot's memory.)"""
    import json
    from pathlib import Path

    configs = {a: json.loads((Path(a) / "adapter_config.json").read_text()) for a in adapters}
    for a, config in configs.items():
        targets = config.get("target_modules") or []
        if {"lm_head", "embed_tokens"} & set([targets] if isinstance(targets, str) else targets):
            raise ValueError(f"adapter {a!r} adapts the embeddings or lm_head: a vLLM member takes adapters on "
                             "the layers' projections only (see _cpu_lora_logits)")
    rank = max(config.get("r", 8) for config in configs.values())
    if rank > LORA_RANKS[-1]:
        raise ValueError(f"a LoRA adapter of rank {rank}: vLLM takes ranks up to {LORA_RANKS[-1]}")
    return {"enable_lora": True, "max_loras": len(adapters) + 1, "max_cpu_loras": len(adapters) + 1,
            "max_lora_rank": next(r for r in LORA_RANKS if r >= rank)}


def _cpu_lora_logits() -> None:
    """With LoRA on, vLLM wraps lm_head so that an adapter may add to the logits, and its CPU ops add
    that part with one adapter slot per request, not per row: the prompt log-probs' rows (`score`)
    then fail to line up ("einsum(): subscript b has size 8 ... 3"). No adapter a member takes touches
    lm_head (lora_options refuses one that does), so that part is zero: skipped here, in this process.
    (vLLM's GPU path maps each row; it is left alone.)"""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    PunicaWrapperCPU.add_lora_logits = lambda self, *args, **kwargs: None


def warm(vllm) -> None:
    """Each sampling path vLLM treats apart, once alone and once together, before the member says
    it is ready (in the vLLM thread). What a path does the first time it runs (torch.compile of
    vLLM's sampler helpers where compilation is on, lazy imports, first allocations) then happens
    here and not under a request, where it would hold up every run on this member
    (docs/studies/vllm-first-use.md). Four prompt ids fill no KV block: nothing stays cached."""
    from vllm import SamplingParams, TokensPrompt

    from . import vllm_capture

    ids = list(range(1, 5))
    paths = [dict(temperature=0), dict(seed=0), dict(temperature=0.8, top_p=0.9, top_k=5, seed=0),
             dict(seed=0, logprobs=2), dict(temperature=0, prompt_logprobs=1),
             dict(temperature=0, prompt_logprobs=-1), dict(seed=0, allowed_token_ids=ids[:2]),
             dict(temperature=0, extra_args={vllm_capture.KEY: "warm"})]
    for n, batch in enumerate([[p] for p in paths] + [paths]):
        for i, path in enumerate(batch):
            params = SamplingParams(max_tokens=2, detokenize=False, ignore_eos=True, **path)
            vllm.add_request(f"warm-{n}-{i}", TokensPrompt(prompt_token_ids=ids), params)
        while vllm.has_unfinished_requests():
            vllm.step()
    vllm_capture.ROWS.pop("warm", None)


def _dtype(dtype: str, device: str) -> str:
    if dtype == "auto":
        # float32 on CPU (faster there and exact across runs), bfloat16 on a GPU: as the transformers engine.
        return "bfloat16" if device == "cuda" else "float32"
    return dtype


def _environment() -> str:
    """vLLM's process-wide settings, before it is imported: quiet logs, the engine core in this
    process, no CPU binding of its own."""
    import torch

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if torch.cuda.is_available():
        return "cuda"
    os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)  # whole GiB only; kv_cache_space_gib sets the bytes
    # Ray already gave this member its CPUs; vLLM's own binding would pin every member to the same cores.
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
    # oneDNN keeps every matmul it compiles for a new batch shape (tokens per step) in a cache of 1,024
    # by default: a member serving prompts of every length grew 495 MB in 6,400 requests, levelling off
    # only as the cache filled. Sixteen kept: 90 MB, and no slower (docs/studies/member-memory.md).
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE))
    return "cpu"


def no_compile() -> None:
    """torch.compile off in this process. A member that runs eager on CPU (CPU_DEFAULTS) would compile
    only vLLM's sampler helpers (the rank count behind every log-prob), with a C++ compiler, in the
    vLLM thread, under the first request that asks for log-probs: 10.5 s on an idle 2-core machine
    with an empty cache, 21 s beside a loaded test suite, every run on the member waiting behind it
    (docs/studies/vllm-first-use.md). Run eagerly, that first request takes 4 ms."""
    import torch._dynamo

    os.environ["TORCHDYNAMO_DISABLE"] = "1"  # for anything this process starts
    torch._dynamo.config.disable = True


def set_threads(count: int) -> None:
    """The vLLM thread's torch threads on CPU (OpenMP's count is per calling thread)."""
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(count)

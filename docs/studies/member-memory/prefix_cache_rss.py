"""A vLLM member's resident size against the requests it has served: one engine as a member builds it
(actors/vllm_setup.py), tiny member a, distinct random prompts of 20-300 tokens in batches of 16, with
and without glibc's malloc_trim every 10 batches. Run from the repository root after `make models`:

    .venv/bin/python docs/studies/member-memory/prefix_cache_rss.py [kv_cache_space_gib] [batches] [trim]

Prints one JSON line per 40 batches: requests served, resident MiB, blocks in the prefix cache, and the
last trim's milliseconds.
"""
import ctypes
import json
import random
import sys
import time

import psutil

from mixserve.actors import vllm_setup
from mixserve.references import resolve

space = float(sys.argv[1]) if len(sys.argv) > 1 else 0.25
batches = int(sys.argv[2]) if len(sys.argv) > 2 else 400
trimming = len(sys.argv) > 3 and sys.argv[3] == "trim"

_, args, _, _ = vllm_setup.engine_args(resolve("a", "models/tiny"), "auto", 32, {"kv_cache_space_gib": space})
from vllm import SamplingParams, TokensPrompt  # noqa: E402  (after engine_args: it sets vLLM's environment)
from vllm.v1.engine.llm_engine import LLMEngine  # noqa: E402

vllm_setup.set_threads(1)
engine = LLMEngine.from_engine_args(args, enable_multiprocessing=False)
pool = engine.engine_core.engine_core.scheduler.kv_cache_manager.block_pool
libc = ctypes.CDLL("libc.so.6")
me, rng, n, trim_ms = psutil.Process(), random.Random(0), 0, None
for batch in range(batches):
    for _ in range(16):
        ids = [rng.randrange(1, 380) for _ in range(rng.randint(20, 300))]
        engine.add_request(f"r{n}", TokensPrompt(prompt_token_ids=ids),
                           SamplingParams(max_tokens=rng.randint(1, 30), seed=n, detokenize=False))
        n += 1
    while engine.has_unfinished_requests():
        engine.step()
    if trimming and batch % 10 == 0:
        started = time.perf_counter()
        libc.malloc_trim(0)
        trim_ms = round(1000 * (time.perf_counter() - started), 2)
    if batch % 40 == 0 or batch == batches - 1:
        print(json.dumps({"requests": n, "rss_mib": me.memory_info().rss >> 20,
                          "cached_blocks": len(pool.cached_block_hash_to_block._cache), "trim_ms": trim_ms}), flush=True)

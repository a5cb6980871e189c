"""How long a vLLM member's first request of each kind takes, against the same request again
(docs/studies/vllm-first-use.md). One VllmEngine in this process on the tiny member `a`.

    python docs/studies/vllm_first_use.py MODEL_DIR [--cold] [--compile]

--cold: a fresh, empty TorchInductor cache (a new machine, a new container). TORCHDYNAMO_DISABLE=1
in the environment runs vLLM's sampler helpers eagerly (what the member now does on CPU); --compile
leaves torch.compile on, as on a GPU, so that only the engine's load-time warm-up stands between a
request and the compile.
"""
import argparse
import asyncio
import os
import sys
import tempfile
import time


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    if args.cold:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    from mixserve.references import resolve
    from mixserve.actors.messages import SamplingParams, Segment, StepRequest
    from mixserve.actors import vllm_setup
    from mixserve.actors.vllm_engine import VllmEngine

    if args.compile:
        vllm_setup.no_compile = lambda: None

    started = time.perf_counter()
    engine = VllmEngine("a", resolve(args.model), options={"kv_cache_space_gib": 0.25})
    print(f"load {time.perf_counter() - started:.2f} s")
    ids = [5, 6, 7, 8, 9, 10, 11, 12]
    sampled = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, seed=3)

    async def run(name, make):
        for attempt in ("first", "again"):
            t = time.perf_counter()
            await make()
            print(f"{name:28s} {attempt}: {time.perf_counter() - t:7.3f} s")

    n = iter(range(1000))
    await run("decode 4 (seeded)", lambda: engine.whole(StepRequest(f"s{next(n)}", (Segment(tuple(ids)),), 0, 4, sampled, fresh=True)))
    await run("ce row", lambda: engine.whole(StepRequest(f"s{next(n)}", (Segment(tuple(ids)),), 0, 0, sampled, distribution=True, fresh=True)))
    await run("score, top 2", lambda: engine.score(ids, top=2))
    await run("score, whole rows", lambda: engine.score(ids, rows=True))
    print(f"python {sys.version.split()[0]}, pid {os.getpid()}")


asyncio.run(main())

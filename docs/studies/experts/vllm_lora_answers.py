"""The real experts on one vLLM engine (vLLM multi-LoRA, actors/vllm_stepper.py): each member's greedy
answer to three held-out sums and three held-out clock questions, all 18 requests in flight together.
Run from the repository root after `make base`: .venv/bin/python docs/studies/experts/vllm_lora_answers.py"""
import asyncio
import time

from mixserve.config import load_config
from mixserve.actors.vllm_engine import vllm_group
from mixserve.actors.messages import SamplingParams, Segment, StepRequest
from mixserve.eval.skills import skill_rows
from mixserve.eval.tasks import SEED
cfg = load_config("cluster/experts.yaml")
t = time.time()
group = vllm_group({m.name: dict(name=m.name, source=m.source, max_batch=4, options={"kv_cache_space_gib": 0.5}) for m in cfg.members})
print("loaded", round(time.time() - t, 1), "s", flush=True)
qs = {s: skill_rows(s, "heldout", 3, SEED) for s in ("sums", "clock")}
async def answer(e, q, sid):
    ids = tuple(e.prompt_ids(f"Question: {q}\nAnswer:"))
    req = StepRequest(sid, (Segment(ids=ids),), 0, 40, SamplingParams(temperature=0.0, seed=0), False, fresh=True)
    toks = [t async for part in e.step(req) for t in part.tokens]
    return e.book.tokenizer.decode(toks)
async def main():
    jobs = [(name, s, i, r) for name in group for s in qs for i, r in enumerate(qs[s])]
    outs = await asyncio.gather(*(answer(group[name], r["question"], f"{name}-{s}-{i}") for name, s, i, r in jobs))
    for (name, s, i, r), o in zip(jobs, outs):
        print(f"{name:5s} {s:5s} want {r['answer']:>6s} | {o.splitlines()[0] if o.strip() else o!r}")
asyncio.run(main())

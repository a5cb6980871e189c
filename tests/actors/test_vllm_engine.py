"""A fresh vLLM member (actors/vllm_engine.py, started by actors/vllm_setup.py) compiles nothing under
its first requests: whatever a sampling path does the first time happens before the member is ready
(docs/studies/vllm-first-use.md).

Each check runs the engine in a Ray actor of its own, so that what the engine sets for its process
(torch.compile off on CPU, vLLM's environment) stays out of the test process, and with an empty
TorchInductor cache, as on a new machine."""
import asyncio
import sys

import pytest
import ray
import ray.cloudpickle

from mixserve.actors.messages import SamplingParams, Segment, StepRequest

IDS = (5, 6, 7, 8, 9, 10, 11, 12)
# Ray's workers cannot import a test module by name: the probe travels by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@ray.remote(num_cpus=0.25)
class FirstRequests:
    def run(self, model: str, cache: str, compile_on: bool) -> dict:
        """torch.compile's frame count after loading and after one request of each kind the router
        sends (seeded, top-p and greedy runs, a CE row, log-probs, whole rows)."""
        import os

        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        import torch._dynamo

        from mixserve.actors import vllm_engine, vllm_setup
        from mixserve.references import resolve

        if compile_on:  # as on a GPU, where the member keeps torch.compile
            vllm_setup.no_compile = lambda: None
        engine = vllm_engine.VllmEngine("a", resolve(model), options={"kv_cache_space_gib": 0.25})
        loaded = torch._dynamo.utils.counters["frames"]["ok"]
        asyncio.run(_each_kind(engine))
        return {"at_load": loaded, "after_requests": torch._dynamo.utils.counters["frames"]["ok"]}


async def _each_kind(engine) -> None:
    kinds = [SamplingParams(seed=1), SamplingParams(temperature=0.8, top_p=0.9, top_k=5, seed=2),
             SamplingParams(temperature=0)]
    for i, sampling in enumerate(kinds):
        await engine.whole(StepRequest(f"run{i}", (Segment(IDS),), 0, 3, sampling, fresh=True))
    await engine.whole(StepRequest("row", (Segment(IDS),), 0, 0, SamplingParams(), distribution=True, fresh=True))
    await engine.score(list(IDS), top=2)
    await engine.score(list(IDS), rows=True)


@pytest.mark.parametrize("compile_on", [False, True], ids=["cpu-eager", "compile-on"])
def test_a_fresh_vllm_member_compiles_nothing_under_its_first_requests(tiny_dir, ray_local, tmp_path, compile_on):
    probe = FirstRequests.remote()
    try:
        frames = ray.get(probe.run.remote(str(tiny_dir / "a"), str(tmp_path / "inductor"), compile_on), timeout=240)
    finally:
        ray.kill(probe)
    # Without the fix the first log-probs request compiled vLLM's rank count under it (10-21 s here).
    assert frames["after_requests"] == frames["at_load"], frames
    if compile_on:
        assert frames["at_load"] > 0, "the warm-up should have compiled the sampler's helpers at load"
    else:
        assert frames["at_load"] == 0, "an eager member on CPU should compile nothing at all"

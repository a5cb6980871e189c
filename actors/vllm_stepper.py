"""One vLLM engine and the loop that steps it, for the members it serves: one member, or a co-located
group of members that name one base, each with its own adapter or none (docs/architecture.md,
"Co-located experts"; mixserve/groups.py says who).

vLLM's engine core runs in this process (LLMEngine, no engine-core child process), stepped by one
loop in a worker thread the way MemberEngine steps its forwards: a run costs no inter-process hop,
and CE's whole-row capture (actors/vllm_capture.py) is a dict lookup. Every vLLM call runs in that
one thread: OpenMP's thread count is per calling thread, and vLLM's CPU attention checks that its
plan and its run saw the same count.

Each member (actors/vllm_engine.py's VllmEngine) keeps its own session book, requests and streams,
and names its adapter in every request it sends (a LoRARequest: vLLM's multi-LoRA, the base held
once). The loop takes every member's new requests, runs one engine step for all of them and hands
each member its own outputs: CE's rows of every member in the group step in one forward, and an ME
switch between them is another request to the same engine. vLLM keys its prefix cache by adapter
too, so each member's KV stays its own. A member alone is a group of one: the same code runs.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import vllm_setup
from .loading import ModelSource


class VllmStepper:
    def __init__(self, name: str, source: ModelSource, dtype: str, threads: int, max_num_seqs: int, options: dict,
                 adapters: list[str] = ()):
        """`source`: the base (no adapter); `adapters`: the folders its members' requests name."""
        self.device, args, self.tokenizer, self.ends = vllm_setup.engine_args(  # first: it sets vLLM's environment
            source, dtype, max_num_seqs, options, adapters)
        from vllm.v1.engine.llm_engine import LLMEngine

        self.thread = ThreadPoolExecutor(1, thread_name_prefix=f"vllm-{name}", initializer=vllm_setup.set_threads,
                                         initargs=(threads,))
        self.vllm = self.thread.submit(LLMEngine.from_engine_args, args, enable_multiprocessing=False).result()
        self.members: dict[str, object] = {}  # request id prefix -> its VllmEngine
        self.loras: dict[str, object] = {}  # adapter folder -> its LoRARequest
        self.loop: asyncio.Task | None = None
        self.thread.submit(vllm_setup.warm, self.vllm).result()

    def join(self, member, adapter: str | None):
        """Serve `member`: its request ids' prefix, and the LoRARequest its requests carry (None for
        the base), the adapter loaded now rather than under its first request."""
        prefix = f"{len(self.members)}/"
        self.members[prefix] = member
        if adapter is None:
            return prefix, None
        if adapter not in self.loras:
            from vllm.lora.request import LoRARequest

            from mixserve.references import ModelReferenceError

            lora = LoRARequest(f"{Path(adapter).name}-{len(self.loras) + 1}", len(self.loras) + 1, adapter)
            try:
                self.thread.submit(self.vllm.add_lora, lora).result()
            except Exception as e:  # noqa: BLE001 - vLLM's own message says what does not fit
                raise ModelReferenceError(f"adapter {adapter!r} does not fit the model: {e}") from None
            self.loras[adapter] = lora
        return prefix, self.loras[adapter]

    def wake(self) -> None:
        if self.loop is None:
            self.loop = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        try:
            while any(m.jobs or m.to_abort for m in self.members.values()):
                adds = [(prefix, m.admit()) for prefix, m in self.members.items()]
                try:
                    outputs, refused = await asyncio.get_running_loop().run_in_executor(self.thread, self._tick, adds)
                except Exception as e:  # noqa: BLE001 - vLLM's step failed: fail the runs in it, keep serving
                    for m in self.members.values():
                        m.fail_added(e)  # each aborted at the next tick, as any dropped run
                    continue
                for prefix, m in self.members.items():
                    m.deliver(outputs.get(prefix, []), refused.get(prefix, []))
        finally:
            self.loop = None

    def _tick(self, adds: list) -> tuple[dict, dict]:
        """One engine step, in the worker thread: the only place that touches vLLM after loading. Each
        member's outputs and refused adds, by its prefix."""
        refused = {prefix: self.members[prefix].add(jobs) for prefix, jobs in adds if jobs}
        for m in self.members.values():
            # After the adds: a run dropped while it was being added is aborted now, not forgotten
            # (an abort only reaches requests vLLM has).
            m.abort()
        if not self.vllm.has_unfinished_requests():
            return {}, refused
        started = time.perf_counter()
        outputs = self.vllm.step()
        took = time.perf_counter() - started
        mine: dict[str, list] = {}
        for output in outputs:
            mine.setdefault(output.request_id[: output.request_id.index("/") + 1], []).append(output)
        for n, (prefix, own) in enumerate(mine.items()):
            m = self.members[prefix]
            m.forwards += n == 0  # the step counted once for the group, by its first member in it
            m.compute_s += took
            m.steps += 1
            m.shared_steps += len(outputs) > 1
            m.in_vllm.difference_update(o.request_id for o in own if o.finished)
        return mine, refused

"""The transformers engine: continuous batching over MemberCore (docs/architecture.md, "member"),
run in a member's Ray actor by actors/host.py.

Every step request becomes a job. One loop runs a single packed forward for all jobs ready at that
moment (prefills, catch-ups and decodes together), samples each job's next token and streams it back;
jobs join and leave between forwards. The forward runs in a worker thread, so the actor keeps
answering (health, release, new jobs) while the model computes.

MemberEngine implements actors/protocol.py's Member, as the vLLM engine (actors/vllm_engine.py) does.
"""
from __future__ import annotations

import asyncio
import functools
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

from .batching import BatchingEngine, Job
from .member import MemberCore
from .messages import Scores, StepRequest, StepResult, join


class MemberEngine(BatchingEngine):
    core_class = MemberCore  # what computes its forwards (engine sim: actors/sim_engine.py)

    def __init__(self, max_batch: int = 16, **core_args):
        self.core = self.core_class(**core_args)
        super().__init__(self.core.book)
        self.max_batch = max_batch
        self.jobs: OrderedDict[str, Job] = OrderedDict()  # by session, in turn order
        self.loop: asyncio.Task | None = None
        self.batches = 0  # forwards run by the loop, for metrics and tests
        self.compute_s = 0.0  # seconds in forwards (stats)

    async def score(self, ids: list[int], top: int = 0, rows: bool = False) -> Scores:
        """Off the batching loop (it needs every position's logits), in its own thread."""
        return await asyncio.to_thread(self.core.score, ids, top, rows)

    def stats(self) -> dict:
        """The core's counters; compute_s is the time the engine thread spent in forwards (the rest of
        a token's time is the hand-offs, Ray and the router: docs/architecture.md, "Performance model")."""
        return {**self.core.stats(), "compute_s": self.compute_s, "pid": os.getpid(), "busy": len(self.jobs)}

    def release(self, session: str, keep: bool = False) -> bool:
        """Free the session and end its run, if one is going (the client went away); `keep` holds its
        KV for the session's next turn (actors/sessions.py's `held`)."""
        if not keep:
            self.released.add(session)
        job = self.jobs.pop(session, None)
        if job is not None:
            job.parts.close()
        return self.book.release(session, keep)

    async def step(self, req: StepRequest) -> AsyncIterator[StepResult]:
        """The step's tokens, streamed as they are sampled (a caller asks with num_returns="streaming")."""
        if req.session in self.released:
            return
        job = Job(req, self.book.begin(req, busy=frozenset(self.jobs)), next_step=req.first_step)
        if self.book.full(job.cache):  # never a forward past max_position_embeddings: no row, no catch-up
            if req.steps or req.distribution:
                yield StepResult(finish="length")
            return
        if req.steps == 0 and not req.distribution and job.cache.cached == len(job.cache.ids):
            return  # a sync with nothing new to compute
        self.jobs[req.session] = job
        if self.loop is None:
            self.loop = asyncio.create_task(self._run())
        try:
            while parts := await job.parts.drain():  # what piled up while the caller read goes as one
                yield functools.reduce(join, parts)
        finally:
            if self.jobs.get(req.session) is job:
                del self.jobs[req.session]

    async def _run(self) -> None:
        try:
            while self.jobs:
                batch = list(self.jobs.values())[: self.max_batch]
                for job in batch:  # round robin when more are waiting than fit
                    self.jobs.move_to_end(job.req.session)
                try:
                    logp = await self._compute([job.cache for job in batch])
                except Exception as e:  # noqa: BLE001 - fail this batch's requests, keep serving the rest
                    for job in batch:
                        if self.jobs.get(job.req.session) is job:
                            self._finish(job, e)
                    continue
                self.batches += 1
                for job, row in zip(batch, logp):
                    if self.jobs.get(job.req.session) is job:  # not released meanwhile
                        self._advance(job, row)
        finally:
            self.loop = None

    async def _compute(self, caches):
        """The batch's forward, in a worker thread (a co-located member's: the group's, actors/group.py)."""
        return await asyncio.to_thread(self._forward, caches)

    def _forward(self, caches):
        started = time.perf_counter()
        try:
            return self.core.forward(caches)
        finally:
            self.compute_s += time.perf_counter() - started

    def _advance(self, job: Job, row) -> None:
        req = job.req
        if req.distribution:
            return self._finish(job, StepResult(probs=self.core.probs(row), forwards=1))
        if req.steps == 0:  # eager sync: the forward filled the cache, nothing to sample
            return self._finish(job, StepResult())
        job.forwards += 1
        more = job.next_step + 1 < req.first_step + req.steps
        if (out := self.core.advance(job.cache, row, req.sampling, job.next_step, more)) is None:
            return  # token healing kept the word's end: the next forward samples this step again
        token, piece, finish = out
        job.next_step += 1
        part = StepResult([token], [piece], finish, forwards=job.forwards)
        job.forwards = 0
        if finish or job.next_step >= req.first_step + req.steps:
            return self._finish(job, part)
        job.parts.put(part)

    def _finish(self, job: Job, part: StepResult | Exception) -> None:
        del self.jobs[job.req.session]
        if isinstance(part, Exception):
            job.parts.fail(part)
        else:
            job.parts.put(part)
            job.parts.close()


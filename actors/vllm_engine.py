"""The member on vLLM: the field's engine computes, the router's log stays ours (docs/architecture.md, "Engines").

VllmEngine implements actors/protocol.py's Member, as actors/engine.py's MemberEngine does: the router
cannot tell the engines apart. The session's log is kept here as token ids, each sampled token taken
into it as the other engine takes its own (actors/sessions.py); vLLM's prefix cache is its KV. Each
run is one vLLM request whose prompt is the log and whose max_tokens is the run's length, streamed
back as tokens are sampled. A session's runs are chunks of one resumable request where vLLM allows
(actors/vllm_streams.py): its KV stays in vLLM between runs and a run sends only the tokens this member
has not seen; elsewhere the catch-up is the prefix cache's miss (the partial last block and the new
tokens). Release aborts the session's request; eviction is vLLM's own, and a session it dropped is
recomputed from the log, never lost. At most max_batch runs are in vLLM at once, counted here, so that
paused streams never take a running run's place.

vLLM's engine runs in this process, stepped by actors/vllm_stepper.py's loop in one worker thread; a
member alone has an engine of its own, and members that name one base share one (vllm_group: the base
once, each member's adapter a LoRA request of its own). A member with an adapter names it in every
request it sends, alone or co-located: the two layouts compute its rows the same way. A member
spanning GPUs or nodes uses vLLM's Ray executor for its workers (`distributed_executor_backend: ray`).
"""
from __future__ import annotations

import asyncio
import itertools
import os
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import replace

import numpy as np

from .batching import BatchingEngine, Job
from .loading import ModelSource
from .messages import InputRefused, Scores, StepRequest, StepResult, join
from .sampling import run_seed
from .sessions import SessionBook, SessionCache
from .vllm_stepper import VllmStepper
from .vllm_streams import Chunk, Streams


class VllmEngine(BatchingEngine):
    def __init__(self, name: str, source: ModelSource, dtype: str = "auto", threads: int = 1,
                 max_sessions: int | None = None, max_cached_tokens: int | None = None, max_batch: int = 16,
                 options: dict | None = None, stepper: VllmStepper | None = None):
        """`stepper`: the engine shared with the member's group (vllm_group); by default its own."""
        options = dict(options or {})
        streaming = options.pop("streaming_input", True)
        if stepper is None:
            stepper = VllmStepper(name, replace(source, adapter=None), dtype, threads,
                                  2 * max_batch if streaming else max_batch, options,
                                  [source.adapter] if source.adapter else [])
        self.stepper, self.vllm, self.device = stepper, stepper.vllm, stepper.device
        self.prefix, self.lora = stepper.join(self, source.adapter)  # its request ids' start, its LoRARequest
        from . import vllm_capture

        self.capture = vllm_capture
        # The context is one short of max_model_len: vLLM scores a sequence (logprobs) only as a prompt
        # that leaves room for one token, so a log that filled max_model_len could be written, not scored.
        super().__init__(SessionBook(name, stepper.tokenizer, stepper.ends, self.vllm.model_config.max_model_len - 1,
                                     max_sessions, max_cached_tokens))
        # A paused stream holds one of vLLM's max_num_seqs slots: max_batch of them, beside max_batch runs.
        self.streams = Streams(self.vllm, max_batch if streaming else 0, self.prefix)
        self.max_batch = max_batch
        self.jobs: dict[str, Job] = {}  # by vLLM request id
        self.by_session: dict[str, Job] = {}
        self.queued: deque[tuple[Job, list[int], object, bool | None]] = deque()  # jobs not yet in vLLM, in order
        self.to_abort: deque[str] = deque()  # appended here, taken in the vLLM thread: deque's ends are thread-safe
        self.in_vllm: set[str] = set()  # request ids added to vLLM and not finished there (vLLM thread only)
        self.ids = itertools.count()
        self.steps = 0  # engine steps that advanced one of this member's requests
        self.shared_steps = 0  # of those, the ones that advanced two or more requests (batching at work)
        self.forwards = 0  # engine steps, each counted by one member of a group (the bench's model calls)
        self.requests = 0  # vLLM requests added
        self.compute_s = 0.0

    @property
    def thread(self):
        return self.stepper.thread

    # -- the member interface ------------------------------------------------------------------

    def stats(self) -> dict:
        """Counters; compute_s is the time the vLLM thread spent in engine steps that advanced this
        member's requests (scheduling, the forward, sampling: vLLM's whole step, shared with the
        group's other members' requests in it)."""
        return {"steps": self.steps, "shared_steps": self.shared_steps, "forwards": self.forwards,
                "requests": self.requests, "evictions": self.book.evictions,
                "running": self.vllm.get_num_unfinished_requests(), "busy": len(self.by_session),
                "compute_s": self.compute_s, "pid": os.getpid(), "streams": len(self.streams.open),
                "streams_opened": self.streams.opened}

    async def release(self, session: str, keep: bool = False) -> bool:
        """Free the session and abort its request, if one is running (the client went away); when this
        returns, vLLM holds nothing for it."""
        if not keep:  # kept: its log stays, vLLM's prefix cache its KV
            self.released.add(session)
        if (job := self.by_session.pop(session, None)) is not None:
            self._drop(job, None)
        if (stream := self.streams.close(session)) is not None:
            self.to_abort.append(stream.rid)
        if self.to_abort:  # this run's, or one its reader dropped when the router cancelled it
            await asyncio.get_running_loop().run_in_executor(self.thread, self.abort)
        return self.book.release(session, keep)

    async def step(self, req: StepRequest) -> AsyncIterator[StepResult]:
        """The step's tokens, streamed as vLLM samples them."""
        if req.session in self.released:
            return
        s = self.book.begin(req, busy=frozenset(self.by_session))
        if self.book.full(s):  # nothing past the context: no row, no catch-up, no run
            if req.steps or req.distribution:
                yield StepResult(finish="length")
            return
        if req.distribution:
            yield StepResult(probs=await self._row(req, s), forwards=1)
            return
        if req.steps == 0:
            if len(s.ids) > s.cached:  # eager sync: fill the prefix cache now, off the critical path
                sync = self._params(max_tokens=1, temperature=0)
                await self._collect(self._submit(req, s, "sync", s.ids, sync, stream=True))
                s.cached = len(s.ids)
            return
        step = req.first_step
        while step < req.first_step + req.steps:
            if (room := self.book.context_length - len(s.ids)) <= 0:
                yield StepResult(finish="length")
                return
            heal, allowed = self.book.healing(s)
            if heal:
                params = self._params(req, step, 1, allowed_token_ids=allowed.tolist())
            else:
                params = self._params(req, step, min(room, req.first_step + req.steps - step))
            job = self._submit(req, s, "heal" if heal else "run", list(s.ids), params, stream=not heal)
            async for tokens in self._parts(job):
                result = StepResult(forwards=len(tokens))
                for token in tokens:
                    if (out := self.book.accept(s, token, heal, step + 1 < req.first_step + req.steps)) is None:
                        break  # healing kept the word's end: the same step samples again, unconstrained
                    step += 1
                    piece, finish = out
                    result = join(result, StepResult([token], [piece], finish))
                    if finish:
                        self._drop(job, None)
                        yield result
                        return
                heal = b""
                if result.tokens:
                    yield result
            s.cached = len(s.ids)

    async def score(self, ids: list[int], top: int = 0, rows: bool = False) -> Scores:
        """Teacher-forced log-probs of ids[1:] through vLLM's prompt_logprobs, in one request that
        touches no session. `rows` (whole rows for a mixture) costs one Python object per vocabulary
        entry and position in vLLM: correct, and slow on large vocabularies."""
        want = -1 if rows else max(top, 1)
        job = self._submit(None, None, "score", ids, self._params(max_tokens=1, temperature=0, prompt_logprobs=want))
        output = await self._collect(job)
        positions = list(output.prompt_logprobs)[1:]  # the first token has nothing before it
        chosen = np.array([p[t].logprob for p, t in zip(positions, ids[1:])], dtype=np.float32)
        if rows:
            table = np.full((len(positions), self.book.vocab_size), -np.inf, dtype=np.float32)
            for r, p in enumerate(positions):
                for t, lp in p.items():
                    if t < self.book.vocab_size:
                        table[r, t] = lp.logprob
            return Scores(chosen, rows=table)
        best = [sorted(((lp.logprob, t) for t, lp in p.items()), reverse=True)[:top] for p in positions]
        return Scores(chosen, np.array([[t for _, t in b] for b in best], dtype=np.int64).reshape(len(best), top),
                      np.array([[lp for lp, _ in b] for b in best], dtype=np.float32).reshape(len(best), top))

    # -- requests through the engine loop ------------------------------------------------------

    def _params(self, req: StepRequest | None = None, step: int = 0, max_tokens: int = 1, **extra):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        fields = dict(max_tokens=max_tokens, detokenize=False, output_kind=RequestOutputKind.DELTA,
                      stop_token_ids=list(self.book.eos_ids))
        if req is not None:
            sampling = req.sampling
            # A run's draws are seeded by (request seed, first step): the same run repeats exactly.
            fields.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                          seed=run_seed(sampling.seed, step))
        fields.update(extra)
        return SamplingParams(**fields)

    def _submit(self, req: StepRequest | None, s: SessionCache | None, kind: str, ids: list[int], params,
                stream: bool = False) -> Job:
        if stream and self.streams.enabled:
            opened, ids, closed = self.streams.chunk(req.session, ids, live=self.book.sessions)
            self.to_abort.extend(closed)
            job = Job(req, s, rid=opened.rid, kind=kind, chunk=Chunk(opened, ids, params.max_tokens))
            first = not opened.held
            self.requests += first
        else:
            job, first = Job(req, s, rid=f"{self.prefix}{kind}-{next(self.ids)}", kind=kind), None
            self.requests += 1
        if params.extra_args and self.capture.KEY in params.extra_args:
            # Keyed before vLLM's thread can take the request: set after, a row could go uncaptured.
            params.extra_args[self.capture.KEY] = job.rid
        self.jobs[job.rid] = job
        if req is not None:
            self.by_session[req.session] = job
        self.queued.append((job, ids, params, first))
        self.stepper.wake()
        return job

    async def _outputs(self, job: Job) -> AsyncIterator:
        """The request's outputs as vLLM produces them; dropped from vLLM when the reader stops."""
        try:
            async for output in job.parts:
                yield output
        finally:
            self._drop(job, None)

    async def _parts(self, job: Job) -> AsyncIterator[list[int]]:
        async for output in self._outputs(job):
            yield output.outputs[0].token_ids

    async def _collect(self, job: Job):
        """The request's last output (rows, syncs and scores finish in one engine step)."""
        last = None
        async for last in self._outputs(job):
            pass
        return last

    async def _row(self, req: StepRequest, s: SessionCache) -> np.ndarray:
        import torch

        params = self._params(max_tokens=1, temperature=0, extra_args={self.capture.KEY: None})
        job = self._submit(req, s, "row", list(s.ids), params)
        try:
            await self._collect(job)
            if (logits := self.capture.ROWS.pop(job.rid, None)) is None:
                raise RuntimeError(f"member {self.book.name!r} cannot hand over its next-token distribution: "
                                   f"its vLLM workers run in other processes (tensor/pipeline parallel); "
                                   f"use method me or single with it")
        finally:
            self.capture.ROWS.pop(job.rid, None)
        s.cached = len(s.ids)
        return torch.softmax(logits[: self.book.vocab_size].double(), dim=-1).float().numpy()

    def _drop(self, job: Job, error: Exception | None) -> None:
        """Forget a request: aborted in vLLM if it still runs, its reader told it ended (or failed)."""
        if self.jobs.get(job.rid) is not job:
            return
        self._forget(job)
        if job.chunk is not None and self.streams.open.get(job.chunk.stream.session) is job.chunk.stream:
            self.streams.close(job.chunk.stream.session)  # cut mid-chunk: what vLLM holds is unknown
        self.to_abort.append(job.rid)
        if error is None:
            job.parts.close()
        else:
            job.parts.fail(error)

    def _forget(self, job: Job) -> None:
        """The job is no longer ours to read from vLLM (finished, paused at its chunk's end, or dropped)."""
        del self.jobs[job.rid]
        if self.by_session.get(job.req.session if job.req else None) is job:
            del self.by_session[job.req.session]

    # -- the stepper's calls (actors/vllm_stepper.py), between and in its engine steps -----------

    def deliver(self, outputs: list, refused: list) -> None:
        """This member's outputs of one engine step, and its adds that vLLM refused (event loop)."""
        for job, error in refused:
            self._drop(job, error)  # that request alone: the others run on (invariant 8)
        for output in outputs:
            if (job := self.jobs.get(output.request_id)) is None:
                continue  # released meanwhile
            job.parts.put(output)
            if job.chunk is not None and not output.finished:
                job.chunk.got += output.outputs[0].token_ids
                if len(job.chunk.got) < job.chunk.want:
                    continue
                self.streams.done(job.chunk)  # paused in vLLM, not finished
            elif not output.finished:
                continue
            elif job.chunk is not None:
                self.streams.close(job.chunk.stream.session)
            self._forget(job)
            job.parts.close()
        if self.streams.open:
            self.to_abort.extend(self.streams.crowding())

    def fail_added(self, error: Exception) -> None:
        """vLLM's step failed: every run of this member in it fails (event loop)."""
        for job in [job for job in self.jobs.values() if job.added]:
            self._drop(job, error)

    def admit(self) -> list[tuple[Job, list[int], object, bool | None]]:
        """Queued jobs to send vLLM, in order, while fewer than max_batch are in it (event loop)."""
        room = self.max_batch - sum(job.added for job in self.jobs.values())
        adds = []
        while self.queued and room > 0:
            job, ids, params, first = self.queued.popleft()
            if self.jobs.get(job.rid) is job:  # not dropped before it started
                job.added = True
                adds.append((job, ids, params, first))
                room -= 1
        return adds

    def add(self, adds: list) -> list:
        """Send the admitted jobs to vLLM (vLLM thread); the ones it refused, with their errors."""
        from vllm import TokensPrompt

        refused = []
        for job, ids, params, first in adds:
            if self.jobs.get(job.rid) is not job:
                continue  # dropped since it was admitted
            self.in_vllm.add(job.rid)  # even if the add fails halfway: aborting an id vLLM lacks is a no-op
            try:
                if first is None:
                    self.vllm.add_request(job.rid, TokensPrompt(prompt_token_ids=ids), params, lora_request=self.lora)
                else:
                    self.streams.add(job.rid, ids, params, first, self.lora)
            except Exception as e:  # noqa: BLE001 - vLLM checks each request as it is added: this one's fault
                refused.append((job, _refused(e)))
        return refused

    def abort(self) -> None:
        """Abort the dropped requests that vLLM still runs (in the vLLM thread, like every call into it)."""
        aborts = []
        while self.to_abort:
            aborts.append(self.to_abort.popleft())
        if aborts := [rid for rid in aborts if rid in self.in_vllm]:
            self.in_vllm.difference_update(aborts)  # first: an abort that raises is not tried again and again
            self.vllm.abort_request(aborts)


def vllm_group(members: dict[str, dict]) -> dict[str, VllmEngine]:
    """Co-located members on one vLLM engine: `members`, name -> its engine's arguments (as a member
    alone takes them), name one base and agree on its options (mixserve/groups.py checks); each runs
    through its own adapter, or none."""
    first = next(iter(members.values()))
    options = dict(first.get("options") or {})
    per = 2 if options.pop("streaming_input", True) else 1  # a run and a paused stream per session
    stepper = VllmStepper("+".join(members), replace(first["source"], adapter=None), first.get("dtype", "auto"),
                          first.get("threads", 1), sum(per * args.get("max_batch", 16) for args in members.values()),
                          options, list(dict.fromkeys(a["source"].adapter for a in members.values() if a["source"].adapter)))
    return {name: VllmEngine(stepper=stepper, **args) for name, args in members.items()}


def _refused(error: Exception) -> Exception:
    """vLLM's own check of a request (a client error: a prompt past max_model_len, ...) as the member's
    InputRefused, a 400 for that request (router/calls.py); any other error stays the member's fault."""
    from vllm.exceptions import VLLMClientError

    return InputRefused(str(error)) if isinstance(error, VLLMClientError) else error



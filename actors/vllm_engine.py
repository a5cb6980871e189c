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

vLLM's engine core runs in this process (LLMEngine, no engine-core child process), stepped by one
loop in a worker thread the way MemberEngine steps its forwards: a run costs no inter-process hop,
and CE's whole-row capture (actors/vllm_capture.py) is a dict lookup. A member spanning GPUs or nodes
uses vLLM's Ray executor for its workers (`distributed_executor_backend: ray`).
"""
from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .dataplane import DataPlaneMember
from .loading import ModelSource, chat_fixup, model_dir
from .mailbox import Mailbox
from .messages import MemberInfo, Scores, StepRequest, StepResult, join
from .sampling import run_seed
from .sessions import ReleasedIds, SessionBook, SessionCache, eos_ids
from .vllm_streams import Stream, Streams

# On CPU: no graph compilation (40-90 s per start on 2 cores), the smallest block the CPU attention
# takes (prefix caching reuses whole blocks: ME's catch-up recomputes the partial last one).
CPU_DEFAULTS = {"enforce_eager": True, "block_size": 32}
CPU_MAX_MODEL_LEN = 4096  # unless max_model_len says otherwise; one prefill chunk holds it
KV_SPACE_GIB = 1  # the CPU KV cache per member unless kv_cache_space_gib says otherwise (on a GPU: gpu_memory_utilization)


@dataclass
class Run:
    """One vLLM request and where its tokens go."""
    req: StepRequest
    cache: SessionCache
    rid: str
    kind: str  # "run" | "row" (ce distribution) | "sync" (eager sync) | "heal" (first token, constrained)
    parts: Mailbox = field(default_factory=Mailbox)  # vLLM's outputs, then the end or an error
    stream: Stream | None = None  # the session's resumable request this run is a chunk of
    sent: list[int] = field(default_factory=list)  # the chunk's ids (a stream's)
    want: int = 0  # tokens the chunk samples: vLLM pauses a stream there without finishing it
    got: list[int] = field(default_factory=list)  # tokens sampled so far (a stream's)
    added: bool = False  # in vLLM (counted against max_batch) rather than queued here


class VllmEngine(DataPlaneMember):
    def __init__(self, name: str, source: ModelSource, dtype: str = "auto", threads: int = 1,
                 max_sessions: int | None = None, max_cached_tokens: int | None = None, max_batch: int = 16,
                 options: dict | None = None):
        options = dict(options or {})
        streaming = options.pop("streaming_input", True)
        if options.get("tensor_parallel_size", 1) * options.get("pipeline_parallel_size", 1) > 1:
            # Workers on several GPUs, maybe nodes: Ray places them, one GPU each (cluster/placement.py).
            options.setdefault("distributed_executor_backend", "ray")
        self.device = _environment()
        space = options.pop("kv_cache_space_gib", KV_SPACE_GIB if self.device == "cpu" else None)
        if space is not None:
            options["kv_cache_memory_bytes"] = int(space * (1 << 30))
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig
        from vllm.engine.arg_utils import EngineArgs
        from vllm.v1.engine.llm_engine import LLMEngine

        from . import vllm_capture

        folder = model_dir(source)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        ends = chat_fixup(source, tokenizer)
        try:
            generation_eos = GenerationConfig.from_pretrained(folder).eos_token_id
        except OSError:  # no generation_config.json
            generation_eos = None
        generation_eos = [generation_eos] if isinstance(generation_eos, int) else list(generation_eos or [])
        if self.device == "cpu":
            longest = getattr(AutoConfig.from_pretrained(folder), "max_position_embeddings", None) or CPU_MAX_MODEL_LEN
            options = {**CPU_DEFAULTS, "max_model_len": min(longest, CPU_MAX_MODEL_LEN), **options}
            if options["enforce_eager"]:
                _no_compile()
        # One prefill chunk holds a whole context: vLLM's CPU generators cannot rewind a partial
        # prefill's discarded sample (seeded requests fail with "CPU Generator does not use offset").
        options.setdefault("max_num_batched_tokens", max(options.get("max_model_len") or 0, 8192))
        args = EngineArgs(model=str(folder), dtype=_dtype(dtype, self.device), skip_tokenizer_init=True,
                          enable_prefix_caching=True, max_num_seqs=2 * max_batch if streaming else max_batch,
                          max_logprobs=-1,
                          logits_processors=[vllm_capture.CaptureRows], disable_log_stats=True, **options)
        # Every vLLM call runs in this one thread: OpenMP's thread count is per calling thread, and
        # vLLM's CPU attention checks that its plan and its run saw the same count.
        self.thread = ThreadPoolExecutor(1, thread_name_prefix=f"vllm-{name}", initializer=_threads,
                                         initargs=(threads,))
        self.vllm = self.thread.submit(LLMEngine.from_engine_args, args, enable_multiprocessing=False).result()
        self.capture = vllm_capture
        self.book = SessionBook(name, tokenizer, eos_ids(generation_eos + ends, tokenizer),
                                self.vllm.model_config.max_model_len, max_sessions, max_cached_tokens)
        # A paused stream holds one of vLLM's max_num_seqs slots: max_batch of them, beside max_batch runs.
        self.streams = Streams(self.vllm, max_batch if streaming else 0)
        self.max_batch = max_batch
        self.runs: dict[str, Run] = {}  # by vLLM request id
        self.by_session: dict[str, Run] = {}
        self.released = ReleasedIds()
        self.queued: deque[tuple[Run, list[int], object, bool | None]] = deque()  # runs not yet in vLLM, in order
        self.to_abort: deque[str] = deque()  # appended here, taken in the vLLM thread: deque's ends are thread-safe
        self.in_vllm: set[str] = set()  # request ids added to vLLM and not finished there (vLLM thread only)
        self.loop: asyncio.Task | None = None
        self.ids = itertools.count()
        self.steps = 0  # engine steps run by the loop
        self.shared_steps = 0  # of those, the ones that advanced two or more requests (batching at work)
        self.requests = 0  # vLLM requests added
        self.compute_s = 0.0
        self.thread.submit(self._warm).result()

    # -- the member interface ------------------------------------------------------------------

    def info(self) -> MemberInfo:
        return self.book.info()

    def prompt_ids(self, prompt: str | None = None, messages: list[dict] | None = None) -> list[int]:
        return self.book.prompt_ids(prompt, messages)

    def pieces(self) -> list[bytes]:
        return self.book.pieces()

    def live_sessions(self) -> int:
        return self.book.live_sessions()

    def stats(self) -> dict:
        """Counters; compute_s is the time the vLLM thread spent in engine steps (scheduling, the
        forward, sampling: vLLM's whole step)."""
        return {"steps": self.steps, "shared_steps": self.shared_steps, "requests": self.requests, "evictions": self.book.evictions,
                "running": self.vllm.get_num_unfinished_requests(), "compute_s": self.compute_s, "pid": os.getpid(),
                "streams": len(self.streams.open), "streams_opened": self.streams.opened}

    def __repr__(self) -> str:  # Ray names the actor by it in logs and its state API
        return f"VllmEngine(name={self.book.name})"

    async def release(self, session: str) -> bool:
        """Free the session and abort its request, if one is running (the client went away); when this
        returns, vLLM holds nothing for it."""
        self.released.add(session)
        if (run := self.by_session.pop(session, None)) is not None:
            self._drop(run, None)
        if (stream := self.streams.close(session)) is not None:
            self.to_abort.append(stream.rid)
        if self.to_abort:  # this run's, or one its reader dropped when the router cancelled it
            await asyncio.get_running_loop().run_in_executor(self.thread, self._abort)
        return self.book.release(session)

    async def step(self, req: StepRequest) -> AsyncIterator[StepResult]:
        """The step's tokens, streamed as vLLM samples them."""
        if req.session in self.released:
            return
        s = self.book.begin(req, busy=frozenset(self.by_session))
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
            room = self.book.context_length - len(s.ids)
            if room <= 0:
                yield StepResult(finish="length")
                return
            heal, allowed = self.book.healing(s)
            if heal:
                params = self._params(req, step, 1, allowed_token_ids=allowed.tolist())
            else:
                params = self._params(req, step, min(room, req.first_step + req.steps - step))
            run = self._submit(req, s, "heal" if heal else "run", list(s.ids), params, stream=not heal)
            async for tokens in self._parts(run):
                result = StepResult(forwards=len(tokens))
                for token in tokens:
                    if (out := self.book.accept(s, token, heal, step + 1 < req.first_step + req.steps)) is None:
                        break  # healing kept the word's end: the same step samples again, unconstrained
                    step += 1
                    piece, finish = out
                    result = join(result, StepResult([token], [piece], finish))
                    if finish:
                        self._drop(run, None)
                        yield result
                        return
                heal = b""
                if result.tokens:
                    yield result
            s.cached = len(s.ids)

    async def whole(self, req: StepRequest) -> StepResult:
        result = StepResult()
        async for part in self.step(req):
            result = join(result, part)
        return result

    async def score(self, ids: list[int], top: int = 0, rows: bool = False) -> Scores:
        """Teacher-forced log-probs of ids[1:] through vLLM's prompt_logprobs, in one request that
        touches no session. `rows` (whole rows for a mixture) costs one Python object per vocabulary
        entry and position in vLLM: correct, and slow on large vocabularies."""
        want = -1 if rows else max(top, 1)
        run = self._submit(None, None, "score", ids, self._params(max_tokens=1, temperature=0, prompt_logprobs=want))
        output = await self._collect(run)
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
                stream: bool = False) -> Run:
        if stream and self.streams.enabled:
            chunk, ids, closed = self.streams.chunk(req.session, ids, live=self.book.sessions)
            self.to_abort.extend(closed)
            run = Run(req, s, chunk.rid, kind, stream=chunk, sent=ids, want=params.max_tokens)
            first = not chunk.held
            self.requests += first
        else:
            run, first = Run(req, s, f"{kind}-{next(self.ids)}", kind), None
            self.requests += 1
        if params.extra_args and self.capture.KEY in params.extra_args:
            # Keyed before vLLM's thread can take the request: set after, a row could go uncaptured.
            params.extra_args[self.capture.KEY] = run.rid
        self.runs[run.rid] = run
        if req is not None:
            self.by_session[req.session] = run
        self.queued.append((run, ids, params, first))
        if self.loop is None:
            self.loop = asyncio.create_task(self._loop())
        return run

    async def _outputs(self, run: Run) -> AsyncIterator:
        """The request's outputs as vLLM produces them; dropped from vLLM when the reader stops."""
        try:
            async for output in run.parts:
                yield output
        finally:
            self._drop(run, None)

    async def _parts(self, run: Run) -> AsyncIterator[list[int]]:
        async for output in self._outputs(run):
            yield output.outputs[0].token_ids

    async def _collect(self, run: Run):
        """The request's last output (rows, syncs and scores finish in one engine step)."""
        last = None
        async for last in self._outputs(run):
            pass
        return last

    async def _row(self, req: StepRequest, s: SessionCache) -> np.ndarray:
        import torch

        params = self._params(max_tokens=1, temperature=0, extra_args={self.capture.KEY: None})
        run = self._submit(req, s, "row", list(s.ids), params)
        try:
            await self._collect(run)
            if (logits := self.capture.ROWS.pop(run.rid, None)) is None:
                raise RuntimeError(f"member {self.book.name!r} cannot hand over its next-token distribution: "
                                   f"its vLLM workers run in other processes (tensor/pipeline parallel); "
                                   f"use method me or single with it")
        finally:
            self.capture.ROWS.pop(run.rid, None)
        s.cached = len(s.ids)
        return torch.softmax(logits[: self.book.vocab_size].double(), dim=-1).float().numpy()

    def _drop(self, run: Run, error: Exception | None) -> None:
        """Forget a request: aborted in vLLM if it still runs, its reader told it ended (or failed)."""
        if self.runs.get(run.rid) is not run:
            return
        self._forget(run)
        if run.stream is not None and self.streams.open.get(run.stream.session) is run.stream:
            self.streams.close(run.stream.session)  # cut mid-chunk: what vLLM holds is unknown
        self.to_abort.append(run.rid)
        if error is None:
            run.parts.close()
        else:
            run.parts.fail(error)

    def _forget(self, run: Run) -> None:
        """The run is no longer ours to read from vLLM (finished, paused at its chunk's end, or dropped)."""
        del self.runs[run.rid]
        if self.by_session.get(run.req.session if run.req else None) is run:
            del self.by_session[run.req.session]

    async def _loop(self) -> None:
        try:
            while self.runs or self.to_abort:
                try:
                    adds = self._admit()
                    outputs = await asyncio.get_running_loop().run_in_executor(self.thread, self._tick, adds)
                except Exception as e:  # noqa: BLE001 - fail the running requests, keep serving
                    for run in list(self.runs.values()):
                        self._drop(run, e)
                    self.to_abort.clear()  # a failed step must not loop on aborts that fail too
                    continue
                for output in outputs:
                    if (run := self.runs.get(output.request_id)) is None:
                        continue  # released meanwhile
                    run.parts.put(output)
                    if run.stream is not None and not output.finished:
                        run.got += output.outputs[0].token_ids
                        if len(run.got) < run.want:
                            continue
                        self.streams.done(run.stream, run.sent, run.got)  # paused in vLLM, not finished
                    elif not output.finished:
                        continue
                    elif run.stream is not None:
                        self.streams.close(run.stream.session)
                    self._forget(run)
                    run.parts.close()
                if self.streams.open:
                    self.to_abort.extend(self.streams.crowding())
        finally:
            self.loop = None

    def _admit(self) -> list[tuple[Run, list[int], object, bool | None]]:
        """Queued runs to send vLLM, in order, while fewer than max_batch are in it."""
        room = self.max_batch - sum(run.added for run in self.runs.values())
        adds = []
        while self.queued and room > 0:
            run, ids, params, first = self.queued.popleft()
            if self.runs.get(run.rid) is run:  # not dropped before it started
                run.added = True
                adds.append((run, ids, params, first))
                room -= 1
        return adds

    def _tick(self, adds: list) -> list:
        """One engine step, in the worker thread: the only place that touches vLLM after loading."""
        from vllm import TokensPrompt

        for run, ids, params, first in adds:
            if self.runs.get(run.rid) is not run:
                continue  # dropped since it was admitted
            if first is None:
                self.vllm.add_request(run.rid, TokensPrompt(prompt_token_ids=ids), params)
            else:
                self.streams.add(run.rid, ids, params, first)
            self.in_vllm.add(run.rid)
        # After the adds: a run dropped while it was being added is aborted now, not forgotten (an
        # abort only reaches requests vLLM has).
        self._abort()
        if not self.vllm.has_unfinished_requests():
            return []
        started = time.perf_counter()
        outputs = self.vllm.step()
        self.compute_s += time.perf_counter() - started
        self.steps += bool(outputs)  # a step with paused streams alone schedules nothing
        self.shared_steps += len(outputs) > 1
        self.in_vllm.difference_update(o.request_id for o in outputs if o.finished)
        return outputs

    def _warm(self) -> None:
        """Each sampling path vLLM treats apart, once alone and once together, before the member says
        it is ready (in the vLLM thread). What a path does the first time it runs (torch.compile of
        vLLM's sampler helpers where compilation is on, lazy imports, first allocations) then happens
        here and not under a request, where it would hold up every run on this member
        (docs/studies/vllm-first-use.md). Four prompt ids fill no KV block: nothing stays cached."""
        from vllm import SamplingParams, TokensPrompt

        ids = list(range(1, 5))
        paths = [dict(temperature=0), dict(seed=0), dict(temperature=0.8, top_p=0.9, top_k=5, seed=0),
                 dict(seed=0, logprobs=2), dict(temperature=0, prompt_logprobs=1),
                 dict(temperature=0, prompt_logprobs=-1), dict(seed=0, allowed_token_ids=ids[:2]),
                 dict(temperature=0, extra_args={self.capture.KEY: "warm"})]
        for n, batch in enumerate([[p] for p in paths] + [paths]):
            for i, path in enumerate(batch):
                params = SamplingParams(max_tokens=2, detokenize=False, ignore_eos=True, **path)
                self.vllm.add_request(f"warm-{n}-{i}", TokensPrompt(prompt_token_ids=ids), params)
            while self.vllm.has_unfinished_requests():
                self.vllm.step()
        self.capture.ROWS.pop("warm", None)

    def _abort(self) -> None:
        """Abort the dropped requests that vLLM still runs (in the vLLM thread, like every call into it)."""
        aborts = []
        while self.to_abort:
            aborts.append(self.to_abort.popleft())
        if aborts := [rid for rid in aborts if rid in self.in_vllm]:
            self.vllm.abort_request(aborts)
            self.in_vllm.difference_update(aborts)


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
    return "cpu"


def _no_compile() -> None:
    """torch.compile off in this process. A member that runs eager on CPU (CPU_DEFAULTS) would compile
    only vLLM's sampler helpers (the rank count behind every log-prob), with a C++ compiler, in the
    vLLM thread, under the first request that asks for log-probs: 10.5 s on an idle 2-core machine
    with an empty cache, 21 s beside a loaded test suite, every run on the member waiting behind it
    (docs/studies/vllm-first-use.md). Run eagerly, that first request takes 4 ms."""
    import torch._dynamo

    os.environ["TORCHDYNAMO_DISABLE"] = "1"  # for anything this process starts
    torch._dynamo.config.disable = True


def _threads(threads: int) -> None:
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(threads)

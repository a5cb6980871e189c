"""A session's KV kept in vLLM between its runs: one resumable request per session (docs/architecture.md,
"Engines", vllm).

Without it, each run is a new vLLM request whose prompt is the whole log: the prefix cache finds the
full blocks, and the partial last block plus the other member's tokens are recomputed, at the cost of
a new request's scheduling. vLLM's streaming input keeps one request open per session instead: a run
is a chunk carrying only the tokens this member has not seen, and its KV stays put while it waits.
vLLM keeps a chunk's sampled tokens but its last one (sampled, never fed), so `held` is what the next
chunk follows from. A paused stream holds a slot of vLLM's batch and its KV blocks: at most `cap`
stay open, least recently used closed first, and paused ones are closed while the KV cache is more
than KV_SHARE full. A closed stream costs nothing but speed: the next run opens a new one from the
log, and the prefix cache still holds the closed one's full blocks.

vLLM 0.32 offers this through AsyncLLM, whose engine core runs in another process. The member runs
vLLM's engine core in its own process (actors/vllm_engine.py), where two things differ, each fixed
here and checked by tests/test_vllm.py:
- the output processor and the scheduler would share a chunk's prompt list, and each extends it with
  the next chunk's tokens: the chunk would land twice. Each gets its own list.
- a resumed chunk samples with the generator its request was created with, whatever the chunk's seed.
  Each chunk gets a generator of its own seed, as a new request would: a run's draws stay a function of
  (request seed, first step) alone, as on the prefix-cache path (actors/sampling.py's run_seed).
Where vLLM's workers run in other processes (tensor or pipeline parallel), neither can be done here,
and runs go the prefix-cache way.
"""
from __future__ import annotations

import copy
import itertools
from collections import OrderedDict
from collections.abc import Container
from dataclasses import dataclass, field

KV_SHARE = 0.5  # paused streams are closed while vLLM's KV cache is fuller than this


@dataclass
class Stream:
    rid: str  # its vLLM request id
    session: str
    held: list[int] = field(default_factory=list)  # the ids whose KV vLLM holds for it
    busy: bool = False  # a chunk is in vLLM


@dataclass
class Chunk:
    """One run's part of a session's stream: the ids it sent and the tokens vLLM sampled so far."""
    stream: Stream
    sent: list[int]
    want: int  # tokens the chunk samples: vLLM pauses a stream there without finishing it
    got: list[int] = field(default_factory=list)


class Streams:
    """The open streams of one vLLM member, by session. Kept by the member's event loop; the calls
    into vLLM (`add`) run in its vLLM thread."""

    def __init__(self, vllm, cap: int, prefix: str = ""):
        self.vllm = vllm
        self.cap = cap
        self.prefix = prefix  # the member's request ids' start: a co-located group's members share one vLLM
        self.runner = _runner(vllm)
        self.open: OrderedDict[str, Stream] = OrderedDict()  # least recently used first
        self.ids = itertools.count()
        self.opened = 0  # streams opened, for stats: runs that found theirs open did not open one
        self.tasks = None  # vLLM's supported tasks, asked once (in the vLLM thread) for every chunk

    @property
    def enabled(self) -> bool:
        return self.runner is not None and self.cap > 0

    def chunk(self, session: str, ids: list[int], live: Container[str]) -> tuple[Stream, list[int], list[str]]:
        """The session's stream for a run on the log `ids`, what to send it, and the request ids of the
        streams to close (aborted by the caller): the session's own when it holds something else than a
        prefix of `ids` (a replayed or healed log), the least recently used past `cap`, and those whose
        sessions are gone from `live` (evicted)."""
        closed = [s.rid for sid, s in list(self.open.items()) if sid not in live and self.close(sid)]
        s = self.open.get(session)
        if s is not None and not s.busy and len(s.held) < len(ids) and ids[: len(s.held)] == s.held:
            self.open.move_to_end(session)
            s.busy = True
            return s, ids[len(s.held):], closed
        if s is not None:
            closed.append(self.close(session).rid)
        while len(self.open) >= self.cap and (victim := next((x for x in self.open.values() if not x.busy), None)):
            closed.append(self.close(victim.session).rid)
        s = self.open[session] = Stream(f"{self.prefix}stream-{next(self.ids)}", session, busy=True)
        self.opened += 1
        return s, list(ids), closed

    def done(self, chunk: Chunk) -> None:
        """A chunk ran to its end: vLLM holds what it was sent and what it sampled but the last."""
        chunk.stream.held += chunk.sent + chunk.got[:-1]
        chunk.stream.busy = False

    def close(self, session: str) -> Stream | None:
        return self.open.pop(session, None)

    def crowding(self) -> list[str]:
        """Paused streams to close now, least recently used first, while the KV cache is fuller than
        KV_SHARE (the member's loop, between engine steps: one float read from vLLM's scheduler)."""
        usage = self.vllm.engine_core.engine_core.scheduler.kv_cache_manager.usage
        if usage <= KV_SHARE:
            return []
        paused = [s for s in self.open.values() if not s.busy]
        return [self.close(s.session).rid for s in paused[: max(1, len(paused) // 2)]]

    def add(self, rid: str, ids: list[int], params, first: bool, lora=None) -> None:
        """Send a chunk (vLLM thread), through the member's adapter (`lora`, a LoRARequest) if it has one."""
        from vllm import TokensPrompt

        if self.tasks is None:
            self.tasks = self.vllm.get_supported_tasks()
        processor = self.vllm.input_processor
        req = processor.process_inputs(request_id=rid, prompt=TokensPrompt(prompt_token_ids=ids), params=params,
                                       supported_tasks=self.tasks, lora_request=lora, resumable=True)
        req.external_req_id = rid
        mine = copy.copy(req)
        mine.prompt_token_ids = list(req.prompt_token_ids)  # not the scheduler's list: see the module's doc
        if not first and (state := self.runner.requests.get(rid)) is not None:
            import torch

            state.generator = None
            if params.seed is not None:
                state.generator = torch.Generator(device=self.runner.device)
                state.generator.manual_seed(params.seed)
        self.vllm.output_processor.add_request(mine, None, None, 0)
        self.vllm.engine_core.add_request(req)


def _runner(vllm):
    """vLLM's model runner when it lives in this process (its one-process executor), else None: with
    workers elsewhere (Ray's executor) a generator here would not be the one that samples."""
    try:
        executor = vllm.engine_core.engine_core.model_executor
        if type(executor).__name__ != "UniProcExecutor":
            return None
        return executor.driver_worker.worker.model_runner
    except AttributeError:
        return None

"""What both batching engines share (docs/architecture.md, "member" and "Engines"): the work in
their batch (Job), the sessions released lately, and `whole`.

The transformers engine (actors/engine.py) and the vLLM engine (actors/vllm_engine.py) each run one
loop that computes every job ready at that moment and hands each job's results to its mailbox; the
caller reads them there.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .mailbox import Mailbox
from .messages import StepRequest, StepResult, join
from .sessions import BookFront, SessionBook, SessionCache

if TYPE_CHECKING:
    from .vllm_streams import Chunk


@dataclass(eq=False)
class Job:
    """A request in an engine's batch and the mailbox its results go to: a step's run on the
    transformers engine; one vLLM request on the vLLM engine, where a step may take several (a
    healed first token, then the run). Each engine reads the fields it needs."""

    req: StepRequest | None  # None: a score, which belongs to no session
    cache: SessionCache | None
    parts: Mailbox = field(default_factory=Mailbox)  # the results, then the end or an error
    next_step: int = 0  # the step it samples next (transformers)
    forwards: int = 0  # forwards run since its last part (transformers)
    rid: str = ""  # its vLLM request id
    kind: str = "run"  # "run" | "row" (ce distribution) | "sync" (eager sync) | "heal" | "score" (vLLM)
    chunk: Chunk | None = None  # the session's resumable request it is a chunk of (vLLM)
    added: bool = False  # in vLLM (counted against max_batch) rather than queued here


class ReleasedIds:
    """Recently released session ids. An async actor may run calls out of order: a step that arrives
    after its session's release is dropped. Bounded: the oldest ids are forgotten."""

    def __init__(self, kept: int = 4096):
        self.ids: OrderedDict[str, None] = OrderedDict()
        self.kept = kept

    def add(self, session: str) -> None:
        self.ids[session] = None
        while len(self.ids) > self.kept:
            self.ids.popitem(last=False)

    def __contains__(self, session: str) -> bool:
        return session in self.ids


class BatchingEngine(BookFront):
    def __init__(self, book: SessionBook):
        self.book = book
        self.released = ReleasedIds()

    async def whole(self, req: StepRequest) -> StepResult:
        """The step as one result, for steps with one part (a ce distribution, a one-token run): a
        plain call's reply costs less than a stream's item (router/clients.py)."""
        result = StepResult()
        async for part in self.step(req):
            result = join(result, part)
        return result

"""A member as a Ray actor (actors/protocol.py's MemberActor): one engine, and the data plane that
carries the router's calls to it (docs/architecture.md, "Data plane").

The transport wraps the engine. MemberHost holds an engine, the one its config names
(mixserve/engines.py: actors/engine.py's MemberEngine or actors/vllm_engine.py's VllmEngine), and
once the router asks, a DataPlane over it. No engine knows how it is reached: the same host serves
every engine, a call from Ray lands here and is handed on, and a call on the data plane goes to the
engine straight. A restarted process is a new host, whose plane the router opens again.
"""
from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from contextlib import aclosing

from mixserve.engines import ENGINES

from . import heap
from .dataplane import DataPlane
from .messages import Scores, StepRequest, StepResult
from .sessions import BookFront


async def _answer(out):
    """An engine may answer a call plainly or as a coroutine (actors/protocol.py leaves it to each)."""
    return await out if inspect.isawaitable(out) else out


class MemberHost(BookFront):
    """info, prompt_ids, pieces and live_sessions are answered from the engine's session book."""

    def __init__(self, engine: str, built=None, **args):
        """`engine`: the config's name for it ("transformers", "vllm"); `args` its constructor's;
        `built`: the engine itself, built already (a co-located member's, actors/group.py)."""
        self.engine = built or ENGINES[engine].engine_class()(**args)
        self.plane: DataPlane | None = None
        heap.start_trimming()  # a member's resident size follows its live memory (actors/heap.py)

    @property
    def book(self):
        return self.engine.book

    def __repr__(self) -> str:  # Ray names the actor by it in logs and its state API: the engine's
        return repr(self.engine)

    # -- the member's calls, as Ray tasks ------------------------------------------------------

    async def step(self, req: StepRequest) -> AsyncIterator[StepResult]:
        async with aclosing(self.engine.step(req)) as parts:  # a cancelled caller ends the engine's run now
            async for part in parts:
                yield part

    async def whole(self, req: StepRequest) -> StepResult:
        return await self.engine.whole(req)

    async def release(self, session: str, keep: bool = False) -> bool:
        return await _answer(self.engine.release(session, keep))

    async def score(self, ids: list[int], top: int = 0, rows: bool = False) -> Scores:
        return await _answer(self.engine.score(ids, top, rows))

    def stats(self) -> dict:
        return self.engine.stats()

    # -- the data plane ------------------------------------------------------------------------

    async def data_plane(self, key: bytes, router_ip: str, host: str | None = None) -> str:
        """The plane's address, opened on the first call. `host`: the configured address to listen on;
        by default loopback when the router is on this node, else the node's IP as Ray knows it."""
        if self.plane is None:
            if not host:
                import ray.util

                node = ray.util.get_node_ip_address()
                host = "127.0.0.1" if node == router_ip else node
            self.plane = DataPlane(self.engine, key, f"[{host}]" if ":" in host else host)
        elif self.plane.key != key:
            raise PermissionError("this member's data plane belongs to another router")
        return self.plane.endpoint

    def data_plane_stats(self) -> dict:
        plane = self.plane
        return {"calls": len(plane.tasks), "open_runs": len(plane.feeds)} if plane else {"calls": 0, "open_runs": 0}

    def data_plane_trace(self) -> list[tuple]:
        return list(self.plane.trace) if self.plane else []

    async def watch(self) -> None:
        """Never answers: the router holds this call open, and Ray fails it when this process dies."""
        await asyncio.Event().wait()

"""Co-located members: one process holding one base for the members that name it, each with its own
adapter and its own sessions (docs/architecture.md, "Co-located experts"; mixserve/groups.py says who).
This file is the transformers engine's group, and the group's actor for both engines; vLLM members
share one vLLM engine instead (actors/vllm_stepper.py).

Each member keeps a whole engine of its own (actors/engine.py's MemberEngine: its session book and so
its KV, its released ids, its batching loop), whose core shares the group's Weights (actors/weights.py:
the base once, each adapter beside it). The engines' loops hand their forwards to one SharedForward,
which runs every forward waiting at that moment as one packed call, each row through its member's
adapter (actors/lora.py). So under CE the members' rows step in one forward, and under ME a switch
between co-located members is another route through the same weights, in the same process.

GroupHost is the group as one Ray actor. Every call names its member first; the router holds a
MemberView per member, which puts the name there, so the router's view is unchanged: separate
members, each with its weights, its pool and its data plane.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from .engine import MemberEngine
from .host import MemberHost
from .member import MemberCore
from .messages import StepRequest, StepResult
from .weights import Weights


class SharedForward:
    """The group's forwards: what the members' loops ask for while one runs goes in the next, together."""

    def __init__(self):
        self.waiting: list[tuple[MemberCore, list, asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def forward(self, core: MemberCore, caches: list):
        """`core`'s rows' next-token log-probs, computed in one call with the other members' rows."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((core, caches, future))
        if self.task is None:
            self.task = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        try:
            await asyncio.sleep(0)  # the members' loops woken by the same arrivals join this call
            while self.waiting:
                batch, self.waiting = self.waiting, []
                rows = [c for _, caches, _ in batch for c in caches]
                routes = [core.adapter for core, caches, _ in batch for _ in caches]
                try:  # any core runs it: they share the weights, each row goes through its own adapter
                    logp = await asyncio.to_thread(batch[0][0].forward, rows, routes)
                except Exception as e:  # noqa: BLE001 - each caller fails its own batch, as MemberEngine's
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                start = 0
                for _, caches, future in batch:
                    if not future.done():  # its loop was cancelled meanwhile
                        future.set_result(logp[start:start + len(caches)])
                    start += len(caches)
        finally:
            self.task = None


class GroupMember(MemberEngine):
    """A member's engine whose forwards are the group's."""

    def __init__(self, shared: SharedForward, **args):
        super().__init__(**args)
        self.shared = shared

    async def _compute(self, caches: list):
        started = time.perf_counter()
        try:
            return await self.shared.forward(self.core, caches)
        finally:
            self.compute_s += time.perf_counter() - started


class GroupHost:
    """A co-located group as one Ray actor: each member's calls (actors/protocol.py's MemberActor)
    with its name first, handed to that member's host (actors/host.py, over its own engine)."""

    def __init__(self, engine: str, members: dict[str, dict]):
        """`engine`: the members' (mixserve/groups.py groups one engine's members); `members`: name ->
        its engine's arguments (cluster/placement.py's member_args, max_batch), in the config's order;
        they name one base."""
        if engine == "vllm":  # one vLLM engine, each member's adapter a LoRA request (actors/vllm_stepper.py)
            from .vllm_engine import vllm_group

            built = vllm_group(members)
        else:
            first = next(iter(members.values()))
            weights = Weights(first["source"], first["dtype"], first["threads"])
            shared = SharedForward()
            built = {name: GroupMember(shared, weights=weights, **args) for name, args in members.items()}
        # each MemberHost starts the process's one trimming thread
        self.hosts = {name: MemberHost(engine, built=member) for name, member in built.items()}

    def __repr__(self) -> str:  # Ray names the actor by it in logs and its state API
        return f"GroupHost({'+'.join(self.hosts)})"

    def info(self, member: str):
        return self.hosts[member].info()

    def prompt_ids(self, member: str, prompt: str | None = None, messages: list[dict] | None = None) -> list[int]:
        return self.hosts[member].prompt_ids(prompt, messages)

    def pieces(self, member: str) -> list[bytes]:
        return self.hosts[member].pieces()

    def live_sessions(self, member: str) -> int:
        return self.hosts[member].live_sessions()

    async def step(self, member: str, req: StepRequest) -> AsyncIterator[StepResult]:
        async with aclosing(self.hosts[member].step(req)) as parts:
            async for part in parts:
                yield part

    async def whole(self, member: str, req: StepRequest) -> StepResult:
        return await self.hosts[member].whole(req)

    async def release(self, member: str, session: str, keep: bool = False) -> bool:
        return await self.hosts[member].release(session, keep)

    async def score(self, member: str, ids: list[int], top: int = 0, rows: bool = False):
        return await self.hosts[member].score(ids, top, rows)

    def stats(self, member: str | None = None) -> dict:
        """A member's stats; without one, the group's: its pid and its members' busy sessions summed
        (the keeper sizes and drains the group by them, cluster/pools.py)."""
        if member is not None:
            return self.hosts[member].stats()
        each = [host.stats() for host in self.hosts.values()]
        return {"pid": each[0]["pid"], "busy": sum(s["busy"] for s in each), "members": len(each)}

    async def data_plane(self, member: str, key: bytes, router_ip: str, host: str | None = None) -> str:
        return await self.hosts[member].data_plane(key, router_ip, host)

    def data_plane_stats(self, member: str) -> dict:
        return self.hosts[member].data_plane_stats()

    def data_plane_trace(self, member: str) -> list[tuple]:
        return self.hosts[member].data_plane_trace()

    async def watch(self, member: str | None = None) -> None:
        await asyncio.Event().wait()


class MemberView:
    """One member of a group's actor as the router holds it: `view.step.remote(req)` is the actor's
    `step.remote(member, req)`, and so for every call, with `.options(...)` kept. Picklable (the
    keeper's view carries it to every router replica)."""

    def __init__(self, actor, member: str):
        self.actor = actor
        self.member = member

    def __getattr__(self, method: str):
        if method.startswith("__") or method in ("actor", "member"):  # unpickling looks these up first
            raise AttributeError(method)
        return _Named(getattr(self.actor, method), self.member)

    def __repr__(self) -> str:
        return f"MemberView({self.member!r})"


class _Named:
    def __init__(self, method, member: str):
        self.method = method
        self.member = member

    def remote(self, *args, **kwargs):
        return self.method.remote(self.member, *args, **kwargs)

    def options(self, **options):
        return _Named(self.method.options(**options), self.member)

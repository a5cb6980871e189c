"""One router replica of the scale bench (mixserve/bench/scale.py): a Ray actor of its own that builds a
router attached to the shared pools (`build_ensemble(config, keeper=...)`, as a Serve ingress replica
does) and drives the load of its share of the clients, so that each router's CPU is its own process's.

Two loads: a closed loop (each client sends its next request as soon as the last ends) measured over a
window common to every router replica, and a ramp whose client count follows a schedule, every request
run to its end and checked: max_tokens tokens, no error (a sim member never writes an end token).
"""
from __future__ import annotations

import asyncio
import time
from contextlib import aclosing

from mixserve.bench.methods import prompt_text
from mixserve.router.request import GenerateRequest
from mixserve.router.session_log import Chunk

PROMPT_WORDS = 16


def request(seed: int, max_tokens: int) -> GenerateRequest:
    return GenerateRequest(prompt=prompt_text(PROMPT_WORDS, seed), max_tokens=max_tokens, seed=seed, method="me")


class LoadRouter:
    def __init__(self, index: int):
        """`index`: this replica's number, which keeps its requests' seeds apart from the others'."""
        self.index = index
        self.ensemble = self.router = None

    async def attach(self, config, keeper) -> None:
        """Build the router over the keeper's pools, once they are ready (the replica's process is
        started before, while the members load)."""
        from mixserve.serving.ensemble import build_ensemble

        # in a thread: building reads the keeper's view with a blocking get, which the loop must not wait in
        self.ensemble = await asyncio.to_thread(build_ensemble, config, keeper=keeper)
        self.router = self.ensemble.router

    async def refresh(self) -> dict[str, int]:
        """Read the pools' view now (after a resize) rather than at the next refresh; each pool's size."""
        pools = next(iter(self.ensemble.pools.values())).pools
        await pools.read()
        return {name: len(pool.slots) for name, pool in self.ensemble.pools.items()}

    async def closed_loop(self, clients: int, start: float, warm_s: float, measure_s: float,
                          max_tokens: int) -> dict:
        """`clients` closed-loop clients from wall time `start`; what arrived in [start + warm_s,
        start + warm_s + measure_s]: tokens, the gaps between a request's tokens (ms, one per token,
        as mixserve/bench/clock.py counts them), this process's CPU seconds. Requests still running at
        the window's end are closed (their sessions released, invariant 7), not waited for."""
        opens, closes = start + warm_s, start + warm_s + measure_s
        seen = {"tokens": 0, "gaps_ms": [], "errors": 0, "requests": 0}
        await asyncio.sleep(max(0.0, start - time.time()))  # the common start every replica was given

        async def client(c: int) -> None:
            for n in range(1_000_000):
                if time.time() >= closes:
                    return
                last = None
                try:
                    async with aclosing(self.router.stream(request(self._seed(c, n), max_tokens))) as items:
                        async for item in items:
                            if not (isinstance(item, Chunk) and item.token_ids):
                                continue
                            now = time.time()
                            if now >= closes:
                                break
                            if now >= opens:
                                seen["tokens"] += len(item.token_ids)
                                if last is not None:
                                    seen["gaps_ms"] += [1000 * (now - last) / len(item.token_ids)] * len(item.token_ids)
                            last = now
                        else:
                            seen["requests"] += time.time() >= opens
                except Exception:  # noqa: BLE001 - counted: the report shows errors beside throughput
                    seen["errors"] += 1

        cpu = None

        async def clock() -> float:
            nonlocal cpu
            await asyncio.sleep(max(0.0, opens - time.time()))
            cpu = time.process_time()
            await asyncio.sleep(max(0.0, closes - time.time()))
            return time.process_time() - cpu

        *_, cpu_s = await asyncio.gather(*(client(c) for c in range(clients)), clock())
        return {**seen, "cpu_s": cpu_s}

    async def ramp(self, levels: list[int], step_s: float, start: float, max_tokens: int) -> dict:
        """Clients follow `levels` (one count per step_s from wall time `start`); a client above the
        count finishes its request and waits. Every request: (start, end, tokens, error or None)."""
        level = {"now": 0, "done": False}
        changed = asyncio.Condition()
        done: list[tuple[float, float, int, str | None]] = []

        async def schedule() -> None:
            for i, n in enumerate(levels + [0]):
                await asyncio.sleep(max(0.0, start + i * step_s - time.time()))
                async with changed:
                    level["now"] = n
                    level["done"] = i == len(levels)
                    changed.notify_all()

        async def client(c: int) -> None:
            for n in range(1_000_000):
                async with changed:
                    await changed.wait_for(lambda: c < level["now"] or level["done"])
                    if level["done"]:
                        return
                began, tokens, error = time.time(), 0, None
                try:
                    result = await self.router.generate(request(self._seed(c, n), max_tokens))
                    tokens = result.usage.completion_tokens
                    if result.choices[0].finish_reason != "length":
                        error = f"finished by {result.choices[0].finish_reason}"
                except Exception as e:  # noqa: BLE001 - a lost session: the report names it
                    error = f"{type(e).__name__}: {e}"
                done.append((began, time.time(), tokens, error))

        await asyncio.gather(schedule(), *(client(c) for c in range(max(levels))))
        return {"requests": done}

    def _seed(self, client: int, n: int) -> int:
        return (self.index * 1000 + client) * 100_000 + n

    def close(self) -> None:
        self.ensemble.close()


"""The one mailbox between a producer and one reader (docs/architecture.md, "member" and "Data plane").

Items go in order, then an end: `close` (the reader's loop ends) or `fail` (the reader raises the
error, after the items put before it). What comes after the end is dropped: a run released while its
forward ran may still be handed its tokens. The reader runs on the event loop the mailbox was made on;
a producer on another thread (gRPC's loop, a ZMQ or vLLM thread) calls the same methods, and they are
carried over to the reader's loop (loop.call_soon_threadsafe), so every change happens on one thread.

Most producers serve many readers at once (an engine's loop, a socket's reader) and must never wait
on one: they `put`, and what they put is bounded by the protocol (a run's tokens). A producer that
serves one reader and may outrun it (a gRPC stream to a slow client) `send`s into a bounded mailbox
and waits there for room.
"""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Generic, TypeVar

T = TypeVar("T")


class MailboxFull(Exception):
    """`put` into a bounded mailbox that holds `bound` items: its producer should `send`."""


class Mailbox(Generic[T]):
    def __init__(self, bound: int = 0):
        self.bound = bound  # most items waiting at once (0: no bound); `send` waits below it
        self.items: deque[T] = deque()
        self.ended = False  # closed or failed: nothing more goes in
        self.error: BaseException | None = None
        self.loop = asyncio.get_running_loop()  # the reader's
        self.thread = threading.get_ident()
        self.ready = asyncio.Event()  # items or the end are waiting
        self.room = asyncio.Event()  # fewer than `bound` items are waiting

    def put(self, item: T) -> None:
        if self._elsewhere():
            self.loop.call_soon_threadsafe(self.put, item)
        elif not self.ended:
            if self.bound and len(self.items) >= self.bound:
                raise MailboxFull(f"mailbox holds {self.bound} items; a producer that can outrun it sends")
            self.items.append(item)
            self.ready.set()

    async def send(self, item: T) -> None:
        """Put, after waiting for room in a bounded mailbox (from any thread, on the producer's loop)."""
        if self._elsewhere():
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.send(item), self.loop))
        while self.bound and len(self.items) >= self.bound and not self.ended:
            self.room.clear()
            await self.room.wait()
        self.put(item)

    async def pour(self, items: AsyncIterator[T]) -> None:
        """Send every item of `items` (from any thread, as `send`), then close; a failure of `items`
        fails the mailbox instead, to be raised where the reader is. `items` is closed however this
        ends, a cancellation included."""
        try:
            async with aclosing(items) as source:
                async for item in source:
                    await self.send(item)
            self.close()
        except Exception as e:  # noqa: BLE001 - the reader raises it
            self.fail(e)

    def close(self) -> None:
        self._end(None)

    def fail(self, error: BaseException) -> None:
        self._end(error)

    def __aiter__(self) -> Mailbox[T]:
        return self

    async def __anext__(self) -> T:
        """The next item; at the end StopAsyncIteration, or the failure raised."""
        await self._wait()
        if self.items:
            return self._take(1)[0]
        raise StopAsyncIteration if self.error is None else self.error

    async def drain(self) -> list[T]:
        """Every item waiting, at least one, taken together (what piled up while the reader was busy);
        [] at the end, or the failure raised after the items before it."""
        await self._wait()
        if self.items:
            return self._take(len(self.items))
        if self.error is not None:
            raise self.error
        return []

    def _elsewhere(self) -> bool:
        return threading.get_ident() != self.thread

    def _end(self, error: BaseException | None) -> None:
        if self._elsewhere():
            self.loop.call_soon_threadsafe(self._end, error)
        elif not self.ended:
            self.ended, self.error = True, error
            self.ready.set()
            self.room.set()  # a producer waiting in `send` goes on, and its item is dropped

    async def _wait(self) -> None:
        while not self.items and not self.ended:
            self.ready.clear()
            await self.ready.wait()

    def _take(self, n: int) -> list[T]:
        taken = [self.items.popleft() for _ in range(n)]
        self.room.set()
        return taken

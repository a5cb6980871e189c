"""actors/mailbox.py: items in order, then the end (closed, or the failure raised at the reader), a
bound that `send` waits on and `put` refuses, and puts from another thread carried to the reader's loop.
No sleeps: each test waits on the thing itself."""
import asyncio
import threading

import pytest

from mixserve.actors.mailbox import Mailbox, MailboxFull


async def read(box: Mailbox) -> list:
    return [item async for item in box]


def test_items_come_in_order_and_the_reader_stops_at_close():
    async def main():
        box = Mailbox()
        for i in range(3):
            box.put(i)
        box.close()
        box.put(99)  # after the end: dropped
        return await read(box)

    assert asyncio.run(main()) == [0, 1, 2]


def test_a_failure_is_raised_at_the_reader_after_the_items_before_it():
    async def main():
        box = Mailbox()
        box.put("a")
        box.fail(ValueError("member gone"))
        box.close()  # the first end holds
        got = []
        with pytest.raises(ValueError, match="member gone"):
            async for item in box:
                got.append(item)
        return got

    assert asyncio.run(main()) == ["a"]


def test_the_reader_waits_for_the_producer():
    async def main():
        box = Mailbox()
        reader = asyncio.create_task(read(box))
        await asyncio.sleep(0)  # the reader is waiting now: nothing has been put
        assert not reader.done()
        box.put(1)
        box.close()
        return await reader

    assert asyncio.run(main()) == [1]


def test_drain_takes_what_piled_up_together():
    async def main():
        box, closed = Mailbox(), Mailbox()
        box.put(1)
        box.put(2)
        first = await box.drain()
        box.put(3)
        box.fail(RuntimeError("boom"))
        second = await box.drain()
        with pytest.raises(RuntimeError, match="boom"):
            await box.drain()
        closed.close()
        return first, second, await closed.drain()

    assert asyncio.run(main()) == ([1, 2], [3], [])


def test_a_bounded_mailbox_makes_send_wait_for_room_and_put_refuse():
    async def main():
        box = Mailbox(bound=2)
        await box.send(1)
        await box.send(2)
        with pytest.raises(MailboxFull):
            box.put(3)
        sending = asyncio.create_task(box.send(3))
        await asyncio.sleep(0)
        assert not sending.done() and list(box.items) == [1, 2]  # full: the producer waits
        assert await anext(box) == 1
        await sending
        box.close()
        return await read(box)

    assert asyncio.run(main()) == [2, 3]


def test_a_close_lets_a_waiting_sender_go():
    async def main():
        box = Mailbox(bound=1)
        box.put(1)
        sending = asyncio.create_task(box.send(2))
        await asyncio.sleep(0)
        box.close()
        await sending
        return await read(box)

    assert asyncio.run(main()) == [1]


def test_puts_from_another_thread_reach_the_reader_in_order():
    async def main():
        box = Mailbox()

        def produce():
            for i in range(100):
                box.put(i)
            box.fail(KeyError("end"))

        thread = threading.Thread(target=produce)
        thread.start()
        got = []
        with pytest.raises(KeyError):
            async for item in box:
                got.append(item)
        thread.join()
        return got

    assert asyncio.run(main()) == list(range(100))


def test_send_from_another_loop_waits_for_room_there():
    """The gRPC servicer's case: the producer runs on another thread's loop, the bound holds across."""
    async def main():
        box = Mailbox(bound=1)
        other = asyncio.new_event_loop()
        thread = threading.Thread(target=other.run_forever)
        thread.start()

        async def produce():
            for i in range(5):
                await box.send(i)
            box.close()

        done = asyncio.run_coroutine_threadsafe(produce(), other)
        got = []
        async for item in box:
            assert len(box.items) <= 1
            got.append(item)
        done.result()
        other.call_soon_threadsafe(other.stop)
        thread.join()
        other.close()
        return got

    assert asyncio.run(main()) == list(range(5))


def test_pour_sends_every_item_then_the_end_or_the_failure_and_closes_its_source():
    closed = []

    async def source(fail: bool):
        try:
            yield 1
            yield 2
            if fail:
                raise KeyError("gone")
        finally:
            closed.append(fail)

    async def main(fail: bool):
        box = Mailbox(bound=1)  # the pour waits for the reader at each item
        pouring = asyncio.create_task(box.pour(source(fail)))
        got = []
        try:
            async for item in box:
                got.append(item)
        except KeyError as e:
            got.append(repr(e))
        await pouring
        return got

    assert asyncio.run(main(False)) == [1, 2]
    assert asyncio.run(main(True)) == [1, 2, "KeyError('gone')"]
    assert closed == [False, True]

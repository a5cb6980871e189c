"""How the router reaches a Ray member: a release outlives the request that sent it."""
import asyncio
import threading
import time

import pytest
import ray

from mixserve.router.clients import RayMember


@ray.remote(num_cpus=0, max_concurrency=1, concurrency_groups={"probe": 1})
class BusyMember:
    """A member whose one call slot is taken, so a release waits in its queue (as behind a long call)."""

    def __init__(self):
        self.free = threading.Event()
        self.released: list[str] = []

    def hold(self) -> None:
        assert self.free.wait(timeout=60)

    def release(self, session: str) -> bool:
        self.released.append(session)
        return True

    @ray.method(concurrency_group="probe")
    def unblock(self) -> None:
        self.free.set()

    @ray.method(concurrency_group="probe")
    def releases(self) -> list[str]:
        return list(self.released)


@ray.remote(num_cpus=0)
class Replica:
    """Stands in for a Serve replica, whose request Serve cancels with ray.cancel (recursive) when the
    client goes away."""

    def __init__(self, member):
        self.member = RayMember(member)
        self.sent = asyncio.Event()

    async def request(self, session: str) -> None:
        self.member.release(session)  # as the router's cleanup does
        self.sent.set()
        await asyncio.Event().wait()  # the request goes on until cancelled

    async def wait_sent(self) -> None:
        await asyncio.wait_for(self.sent.wait(), 30)


def test_a_release_survives_the_recursive_cancellation_of_the_request_that_sent_it(ray_local):
    member = BusyMember.remote()
    held = member.hold.remote()
    replica = Replica.remote(member)
    request = replica.request.remote("s1")
    ray.get(replica.wait_sent.remote(), timeout=60)  # the release is queued behind hold()
    ray.cancel(request)  # recursive by default, as Serve's
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(request, timeout=30)
    ray.get(member.unblock.remote(), timeout=30)
    ray.get(held, timeout=30)
    deadline = time.monotonic() + 10
    while not (released := ray.get(member.releases.remote(), timeout=30)) and time.monotonic() < deadline:
        time.sleep(0.02)  # polling the member itself, with a bound
    assert released == ["s1"]

"""The pools' autoscaler (cluster/autoscale.py) over a keeper in plain Python and a clock of the test's:
a climbing load grows its pool once the upscale delay has passed, though it asks for a larger size at
every tick; a load that falls shrinks the pool only after the downscale delay."""
import asyncio
from types import SimpleNamespace

import pytest

from mixserve.cluster import autoscale
from mixserve.scaling import Autoscaling


class Keeper:
    """A pool `a` whose replicas report `busy` sessions between them."""

    def __init__(self, policy: Autoscaling):
        member = SimpleNamespace(name="a", autoscaling=policy)
        self.config = SimpleNamespace(members=[member])
        self.members = {"a": member}
        self.busy = 0
        self.pools = {"a": {}}
        self._grow(policy.min_replicas)

    def _grow(self, size: int) -> None:
        async def stats():
            return {"busy": self.busy / len(self.pools["a"])}

        while len(self.pools["a"]) < size:
            actor = SimpleNamespace(stats=SimpleNamespace(remote=stats))
            self.pools["a"][f"a:{len(self.pools['a'])}"] = SimpleNamespace(actor=actor, draining=False)

    def sizes(self) -> dict[str, int]:
        return {"a": len(self.pools["a"])}

    async def resize(self, member: str, size: int) -> None:
        self._grow(size)
        for rid in list(self.pools["a"])[size:]:
            del self.pools["a"][rid]


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(autoscale.time, "monotonic", lambda: now[0])
    return now


def run(scaler, clock, busy_each_second) -> list[int]:
    """One tick a second at each load; the pool's size after each."""
    sizes = []
    for busy in busy_each_second:
        scaler.keeper.busy = busy
        asyncio.run(scaler.tick())
        sizes.append(scaler.keeper.sizes()["a"])
        clock[0] += 1.0
    return sizes


def test_a_climbing_load_grows_the_pool_after_the_upscale_delay(clock):
    keeper = Keeper(Autoscaling(1, 8, 4.0, upscale_delay_s=2.0, downscale_delay_s=30.0))
    sizes = run(autoscale.Autoscaler(keeper), clock, [8, 16, 24, 32, 40, 48, 56, 64])
    assert sizes[:2] == [1, 1]  # not before the delay
    assert sizes[2] > 1  # the mean asks more at every tick: the delay counts from the first ask
    assert sizes[-1] >= 6


def test_a_falling_load_shrinks_the_pool_only_after_the_downscale_delay(clock):
    keeper = Keeper(Autoscaling(1, 8, 4.0, upscale_delay_s=0.0, downscale_delay_s=5.0))
    scaler = autoscale.Autoscaler(keeper)
    assert run(scaler, clock, [32])[-1] == 8
    clock[0] += autoscale.WINDOW_S  # the busy samples of the climb leave the window
    sizes = run(scaler, clock, [0] * 8)
    assert sizes[:5] == [8] * 5 and sizes[-1] == 1

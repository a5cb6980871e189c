"""Catching up in the background through real member actors, and the text the same as without it: the
next run opened ahead on its member (router/router.py `_open_next`), and eager_sync, which catches
every idle member up (router/calls.py `MemberCalls.sync_idle`)."""
import asyncio
import time

import yaml

from mixserve.serving.ensemble import build_ensemble
from mixserve.config import parse_config
from mixserve.router.request import GenerateRequest

REQUEST = GenerateRequest(prompt="the river", max_tokens=60, seed=21, n=4, method="me")


def run(tiny_dir, eager_sync: bool, data_plane: bool = True):
    """The request's result, and the rows the members computed for it (a session advanced in one
    forward). Without the data plane every call is a Ray task and no run is opened ahead. A first
    request in the same event loop connects the data plane, as a served app's first request does."""
    raw = yaml.safe_load((tiny_dir / "ensemble.yaml").read_text())
    for m in raw["members"]:
        m.update(resources={"num_cpus": 0.5}, batch_invariant=True)
    plane = "zmq" if data_plane else "ray"
    with build_ensemble(parse_config({**raw, "eager_sync": eager_sync, "data_plane": plane}, tiny_dir)) as engine:
        async def rows() -> int:
            deadline = time.monotonic() + 3.0
            while any((live := await engine.router.live_sessions()).values()) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # polling the members themselves, with a bound
            assert live == {"a": 0, "b": 0}
            return sum(s["rows"] for s in await asyncio.gather(*(a.stats.remote() for a in engine.actors.values())))

        async def measured():
            await engine.router.generate(GenerateRequest(prompt="the sea", max_tokens=4, seed=1, method="me"))
            before = await rows()
            result = await engine.router.generate(REQUEST)
            return result, await rows() - before

        return asyncio.run(measured())


def test_members_catch_up_in_the_background_and_no_text_changes(tiny_dir, ray_local):
    lazy, lazy_rows = run(tiny_dir, eager_sync=False, data_plane=False)
    ahead, ahead_rows = run(tiny_dir, eager_sync=False)
    eager, eager_rows = run(tiny_dir, eager_sync=True)
    for other in (ahead, eager):
        assert [c.text for c in other.choices] == [c.text for c in lazy.choices]
        assert [c.members for c in other.choices] == [c.members for c in lazy.choices]
    assert {m for c in lazy.choices for m in c.members} == {"a", "b"}  # both members took turns
    # Where nothing is opened ahead a member computes a session only when chosen: one row per token
    # it samples, its catch-up fed in that same forward. With the next run opened ahead, the second
    # member of each session prefills the prompt while the first decodes: one row more per session.
    # eager_sync also feeds it the tokens the chosen one streams, in calls of their own: more rows.
    tokens = lazy.usage.completion_tokens
    assert lazy_rows == tokens
    assert tokens < ahead_rows <= tokens + REQUEST.n, f"{ahead_rows} rows for {tokens} tokens"
    assert eager_rows > ahead_rows, f"no background catch-up: {eager_rows} rows for {tokens} tokens"

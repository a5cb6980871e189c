"""Catching up in the background through real member actors, and the text the same as without it: the
next run opened ahead on its member (router/router.py `_open_next`), and eager_sync, which catches
every idle member up (`_sync_idle`)."""
import time

import ray
import yaml

from mixserve.api import build_engine
from mixserve.config import parse_config
from mixserve.router.request import GenerateRequest

REQUEST = GenerateRequest(prompt="the river", max_tokens=60, seed=21, n=4, method="me")


def run(tiny_dir, eager_sync: bool, data_plane: bool = True):
    """The request's result, and the rows the members computed (a session advanced in one forward).
    Without the data plane every call is a Ray task and no run is opened ahead."""
    raw = yaml.safe_load((tiny_dir / "ensemble.yaml").read_text())
    for m in raw["members"]:
        m.update(resources={"num_cpus": 0.5}, batch_invariant=True)
    plane = "zmq" if data_plane else "ray"
    with build_engine(parse_config({**raw, "eager_sync": eager_sync, "data_plane": plane}, tiny_dir)) as engine:
        result = engine.generate(REQUEST)
        deadline = time.monotonic() + 3.0
        while any((live := engine.live_sessions()).values()) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the members themselves, with a bound
        assert live == {"a": 0, "b": 0}
        rows = sum(s["rows"] for s in ray.get([actor.stats.remote() for actor in engine.actors.values()]))
    return result, rows


def test_members_catch_up_in_the_background_and_no_text_changes(tiny_dir, ray_local):
    lazy, lazy_rows = run(tiny_dir, eager_sync=False, data_plane=False)
    ahead, ahead_rows = run(tiny_dir, eager_sync=False)
    eager, eager_rows = run(tiny_dir, eager_sync=True)
    for other in (ahead, eager):
        assert [c.text for c in other.choices] == [c.text for c in lazy.choices]
        assert [c.members for c in other.choices] == [c.members for c in lazy.choices]
    assert {m for c in lazy.choices for m in c.members} == {"a", "b"}  # both members took turns
    # Where nothing is opened ahead a member computes a session only when chosen: one row per token
    # it samples, its catch-up fed in that same forward. With the next run opened ahead, the next
    # member also computes the tokens the chosen one streams, in calls of their own while that one
    # decodes: rows beyond the tokens (and eager_sync, with two members, syncs that same one).
    tokens = lazy.usage.completion_tokens
    assert lazy_rows == tokens
    assert ahead_rows > tokens, f"no background catch-up: {ahead_rows} rows for {tokens} tokens"
    assert eager_rows > tokens

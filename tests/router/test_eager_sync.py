"""eager_sync through real member actors: the idle members catch up in the background while the chosen
one decodes (router/router.py `_sync_idle`), and the text is the same as without it."""
import time

import ray
import yaml

from mixserve.api import build_engine
from mixserve.config import parse_config
from mixserve.router.request import GenerateRequest

REQUEST = GenerateRequest(prompt="the river", max_tokens=60, seed=21, n=4, method="me")


def run(tiny_dir, eager_sync: bool):
    """The request's result, and the rows the members computed (a session advanced in one forward)."""
    raw = yaml.safe_load((tiny_dir / "ensemble.yaml").read_text())
    for m in raw["members"]:
        m.update(resources={"num_cpus": 0.5}, batch_invariant=True)
    with build_engine(parse_config({**raw, "eager_sync": eager_sync}, tiny_dir)) as engine:
        result = engine.generate(REQUEST)
        deadline = time.monotonic() + 3.0
        while any((live := engine.live_sessions()).values()) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the members themselves, with a bound
        assert live == {"a": 0, "b": 0}
        rows = sum(s["rows"] for s in ray.get([actor.stats.remote() for actor in engine.actors.values()]))
    return result, rows


def test_eager_sync_catches_idle_members_up_in_the_background_and_changes_no_text(tiny_dir, ray_local):
    lazy, lazy_rows = run(tiny_dir, eager_sync=False)
    eager, eager_rows = run(tiny_dir, eager_sync=True)
    assert [c.text for c in eager.choices] == [c.text for c in lazy.choices]
    assert [c.members for c in eager.choices] == [c.members for c in lazy.choices]
    assert {m for c in eager.choices for m in c.members} == {"a", "b"}  # both members took turns
    # Without eager sync a member computes a session only when chosen: one row per token it samples,
    # its catch-up fed in that same forward. With it, the idle member also computes the tokens the
    # chosen one streams, in calls of their own while that one decodes: rows beyond the tokens.
    tokens = eager.usage.completion_tokens
    assert lazy_rows == tokens
    assert eager_rows > tokens, f"no background catch-up: {eager_rows} rows for {tokens} tokens"

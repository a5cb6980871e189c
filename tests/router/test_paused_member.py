"""A member that is alive but silent (its process stopped: a hung device, a debugger, SIGSTOP) fails
the sessions waiting on it with a 503 after member_retry_s, as a dead one does, instead of holding
them for as long as it stays silent (docs/architecture.md invariant 6)."""
import os
import signal
import time

import pytest
import ray
import yaml

from mixserve.serving.ensemble import build_ensemble
from mixserve.config import parse_config
from mixserve.router.request import UnavailableError


def test_a_paused_member_fails_its_sessions_after_the_retry_bound_then_serves_again(tiny_dir, ray_local):
    raw = yaml.safe_load((tiny_dir / "ensemble.yaml").read_text())
    for m in raw["members"]:
        m["resources"] = {"num_cpus": 0.5}
    with build_ensemble(parse_config({**raw, "member_retry_s": 2}, tiny_dir)) as engine:
        pid = ray.get(engine.actors["a"].stats.remote(), timeout=30)["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(UnavailableError, match="member 'a' did not answer within 2 s"):
                engine.generate(prompt="the sun", max_tokens=30, seed=1)
            assert time.monotonic() - started < 10
            alone = engine.generate(prompt="the sun", max_tokens=8, seed=1, method="single", member="b")
            assert alone.choices[0].members == ["b"] * 8  # the other member was never held up
        finally:
            os.kill(pid, signal.SIGCONT)
        again = engine.generate(prompt="the sun", max_tokens=30, seed=1)
        assert again.choices[0].finish_reason == "length" and set(again.choices[0].members) == {"a", "b"}
        deadline = time.monotonic() + 10
        while engine.live_sessions() != {"a": 0, "b": 0} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.live_sessions() == {"a": 0, "b": 0}  # the released sessions reached it once it woke

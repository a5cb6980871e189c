"""The short soak (docs/deploy.md, "Reliability"): 40 s of `mixserve soak` on an ensemble mixing a vLLM member with
two transformers members, its own Ray on loopback ports, members killed and paused and streams
dropped under a load twice what admission takes. It fails on any wrong text, unexplained error,
leaked session, memory growth past 10% or Prometheus counter that disagrees with the clients."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from mixserve.models.tiny import soak_config


@pytest.mark.timeout(600)  # about 2 minutes here; the suite's 300 s per test is for single checks
def test_a_short_soak_loses_nothing(tiny_dir, tmp_path):
    config = tiny_dir / "soak-short.yaml"
    config.write_text(yaml.safe_dump(soak_config("mixed"), sort_keys=False))
    out = tmp_path / "soak"
    # Its own Ray (metrics on: the suite's Ray has them off) in its own process, so that its SIGKILLs
    # and SIGSTOPs can only reach its own members.
    env = {k: v for k, v in os.environ.items() if k != "RAY_enable_metrics_collection"}
    run = subprocess.run([sys.executable, "-m", "mixserve", "soak", "--config", str(config), "--duration", "40",
                          "--warmup", "8", "--member-kills", "3", "--pauses", "1", "--router-kills", "0",
                          "--seed", "1", "--out", str(out)], env=env, capture_output=True, text=True, timeout=480)
    report = json.loads((out / "soak.json").read_text())
    s = report["summary"]
    assert run.returncode == 0 and s["passed"], (out / "soak.md").read_text() + run.stderr[-3000:]
    assert s["faults"]["member_kill"] == 3 and s["faults"]["pause"] == 1 and s["faults"]["disconnect"] >= 5
    assert s["verdicts"].get("ok", 0) >= 50 and s["verdicts"].get("explained_429", 0) > 0
    kinds = {f["kind"] for f in report["faults"] if f["end"] is not None}
    assert kinds == {"member_kill", "pause"}  # each fault ended: the member came back
    assert s["prometheus"]["agree"] and sum(s["prometheus"]["server_tokens"].values()) > 0

"""`mixserve bench --calibrate`: engine sim's step_ms and per_seq_ms from a bench run's rows
(mixserve/bench/calibrate.py), printed ready to paste into a config."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from mixserve.bench.calibrate import calibrate, calibration_text
from mixserve.config import parse_config


def row(step_ms: float, per_seq_ms: float, skipped: str | None = None) -> dict:
    """A single-member row as a member whose ticks last exactly step_ms + per_seq_ms × n would give."""
    tick = {c: step_ms + per_seq_ms * c for c in (1, 4, 16)}
    return {"ms_per_token_mean": tick[1], "tokens_per_s": {str(c): 1000 * c / t for c, t in tick.items()},
            "skipped": skipped}


REPORT = {"methods": {"single:m1": row(12, 2), "single:m2": row(14, 0.5), "me": row(1, 1),
                      "vllm single:m1": row(10, 0.25), "vllm single:m2": row(9, 1, skipped="no GPU")}}


def test_the_fit_recovers_each_members_step_line_per_engine():
    fits = calibrate(REPORT)
    assert fits == {"transformers": {"m1": {"step_ms": 12, "per_seq_ms": 2}, "m2": {"step_ms": 14, "per_seq_ms": 0.5}},
                    "vllm": {"m1": {"step_ms": 10, "per_seq_ms": 0.25}}}


def test_the_printed_keys_make_a_valid_sim_member(tmp_path):
    (tmp_path / "bench.json").write_text(json.dumps(REPORT))
    text = calibration_text(tmp_path)
    first = text.split("# members as measured on engine vllm:")[0]
    members = yaml.safe_load(first)["members"]
    config = parse_config({"members": members})
    assert config.members[0].sim["step_ms"] == 12 and config.members[1].sim["per_seq_ms"] == 0.5


def test_the_cli_prints_the_fit_or_says_what_is_missing(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}

    def bench(*args):
        return subprocess.run([sys.executable, "-m", "mixserve", "bench", *args], capture_output=True, text=True,
                              timeout=180, env=env)

    missing = bench("--calibrate", str(tmp_path))
    assert missing.returncode == 2 and "bench.json not found" in missing.stderr
    (tmp_path / "bench.json").write_text(json.dumps(REPORT))
    out = bench("--calibrate", str(tmp_path))
    assert out.returncode == 0 and "sim: {step_ms: 12.0, per_seq_ms: 2.0}" in out.stdout


@pytest.mark.parametrize("methods", [{}, {"single:m1": row(1, 1, skipped="failed")}])
def test_a_run_with_nothing_to_fit_says_so(tmp_path, methods):
    (tmp_path / "bench.json").write_text(json.dumps({"methods": methods}))
    with pytest.raises(ValueError, match="no single-member rows to fit"):
        calibration_text(tmp_path)

"""A small `mixserve eval` end to end on the tiny members, as a user runs it (its own local Ray and
Serve, lm-evaluation-harness as the HTTP client, in a subprocess): every row and task goes through the
pipeline and lands in the report (the scores of random members are not the test's business)."""
import json
import os
import subprocess
import sys

import pytest

TASKS = {"mixserve_arith", "mixserve_mc", "mixserve_text"}


def run_eval(config, out):
    cmd = [sys.executable, "-m", "mixserve", "eval", "--config", str(config), "--examples", "4", "--limit", "2",
           "--check-samples", "300",
           "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "eval.json").read_text()), done.stdout


@pytest.mark.parametrize("config, rows, scored", [
    # a and b share a tokenizer: the ensemble rows are scored too (with the mixture's log-probs)
    ("ensemble.yaml", ["a", "b", "me", "ce"], {"a", "b", "me", "ce"}),
    # a and c do not: the ensemble rows generate only, and ME runs with and without token healing
    ("hetero.yaml", ["a", "c", "me", "ce", "me+healing"], {"a", "c"}),
])
def test_eval_scores_every_row_through_lm_eval(tiny_dir, tmp_path, config, rows, scored):
    report, stdout = run_eval(tiny_dir / config, tmp_path)
    assert list(report["rows"]) == rows
    for name, tasks in report["rows"].items():
        assert set(tasks) == (TASKS if name in scored else {"mixserve_arith"}), name
        assert all(t["n"] == 2 for t in tasks.values()), name
        assert 0 <= tasks["mixserve_arith"]["value"] <= 1
    if {"me", "ce"} <= scored:  # both sample the mixture, so they score the same
        assert report["rows"]["me"]["mixserve_mc"] == report["rows"]["ce"]["mixserve_mc"]
        # ... and ME's samples follow it (a correct server fails this once in a million runs)
        assert report["mixture_check"]["passed"] is True and report["mixture_check"]["samples"] == 300
    table = (tmp_path / "eval.md").read_text()
    assert table.startswith("| row | arithmetic") and table in stdout
    assert (tmp_path / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "tasks" / "mixserve_arith.jsonl").read_text().count("\n") == 4

"""The CLI as a user runs it: a subprocess, clear errors with exit code 2 (its JSON output is checked
against the served app in tests/serving/test_grpc_service.py)."""
import os
import subprocess
import sys

import pytest


def run(*args, timeout=180):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "mixserve", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("args, message", [
    (["--weights", "a=1,z=1"], "weights name unknown members ['z']"),
    (["--method", "ce", "--temperature", "-1"], "temperature must be between"),
    (["--max-tokens", "0"], "max_tokens must be between 1 and 4096"),
    (["--config", "{tiny}/missing.yaml"], "not found"),
])
def test_bad_input_exits_2_with_the_reason(tiny_dir, args, message):
    args = [a.replace("{tiny}", str(tiny_dir)) for a in args]
    config = [] if "--config" in args else ["--config", str(tiny_dir / "ensemble.yaml")]
    out = run("generate", *config, "--prompt", "x", *args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_models_tiny_writes_members_and_configs(tmp_path):
    out = run("models", "tiny", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"a", "b", "c", "ensemble.yaml", "hetero.yaml",
                                                   "soak-transformers.yaml", "soak-vllm.yaml", "soak-mixed.yaml"}


def test_models_sim_writes_a_config_of_simulated_members(tmp_path):
    from mixserve.config import load_config

    out = run("models", "sim", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    config = load_config(tmp_path / "sim.yaml")
    assert config.weights == {"a": 0.8, "b": 0.2} and {m.engine for m in config.members} == {"sim"}
    assert [(m.sim["step_ms"], m.sim["per_seq_ms"], m.max_batch) for m in config.members] == [(20, 0.5, 32)] * 2

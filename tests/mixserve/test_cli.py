"""The CLI as a user runs it: a subprocess, JSON out, clear errors with exit code 2."""
import json
import os
import subprocess
import sys

import pytest


def run(*args, timeout=180):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "mixserve", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_generate_json_has_the_documented_shape(tiny_dir):
    out = run("generate", "--config", str(tiny_dir / "ensemble.yaml"), "--prompt", "the sun", "--json",
              "--max-tokens", "6", "--n", "2", "--seed", "4", "--weights", "a=0.7,b=0.3")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["method"] == "me" and result["seed"] == 4
    assert set(result["prompt_token_ids"]) == {"a", "b"}
    assert set(result["usage"]) >= {"prompt_tokens", "completion_tokens", "member_forward_calls"}
    assert "total_s" in result["timing"]
    for choice in result["choices"]:
        assert set(choice) == {"text", "token_ids", "members", "finish_reason"}
        assert len(choice["token_ids"]) == len(choice["members"]) == 6
        assert choice["finish_reason"] in ("stop", "length")
    assert result["choices"][0]["token_ids"] != result["choices"][1]["token_ids"]  # seeds 4 and 5


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
    assert {p.name for p in tmp_path.iterdir()} == {"a", "b", "c", "ensemble.yaml", "hetero.yaml"}

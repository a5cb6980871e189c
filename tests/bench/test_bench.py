"""A small `mixserve bench` end to end on the tiny members, as a user runs it (its own local Ray and
Serve, in a subprocess): every method runs and the report has the documented fields (the timings
themselves are the benchmark's business, not a test's)."""
import json
import os
import subprocess
import sys

import yaml

FIELDS = {"name", "runs", "tokens", "ms_per_token_median", "ms_per_token_p99", "ms_per_token_mean", "switches_per_token",
          "ttft_s_median", "forwards_per_token", "trips_per_token", "tokens_per_s", "skipped"}
METHODS = ["single:a", "single:b", "ce-parallel", "ce-sequential", "me", "me-ray-calls", "me-http"]


def test_bench_runs_every_method_and_writes_json_table_and_plot(tiny_dir, tmp_path):
    members = [{"name": m, "model": str(tiny_dir / m), "weight": 0.5, "resources": {"num_cpus": 0.25}} for m in "ab"]
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump({"members": members}))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mixserve", "bench", "--config", str(config), "--prompt-tokens", "6",
           "--max-tokens", "8", "--concurrency", "1,2", "--repeats", "2", "--engines", "transformers",
           "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(raylet)" not in done.stdout + done.stderr  # nothing alarming when it tears down

    report = json.loads((out / "bench.json").read_text())
    assert list(report["methods"]) == METHODS
    for name, m in report["methods"].items():
        assert set(m) == FIELDS and m["name"] == name and m["skipped"] is None, name
        assert m["tokens"] > 0 and m["runs"] == 2 and set(m["tokens_per_s"]) == {"1", "2"}, name
        assert all(v > 0 for v in m["tokens_per_s"].values()), name
    assert report["methods"]["ce-parallel"]["forwards_per_token"] == 2.0
    assert report["methods"]["me"]["forwards_per_token"] == 1.0
    assert report["methods"]["me-http"]["forwards_per_token"] == 1.0
    assert report["methods"]["me"]["switches_per_token"] > 0 and report["methods"]["single:a"]["switches_per_token"] == 0
    assert set(report["ratios"]) >= {"floor_ms", "me_over_floor", "switch_ms", "me_speedup_over_ce_sequential",
                                     "me_throughput_over_ce_parallel_at_2", "me_http_over_me", "me_ray_calls_over_me"}
    assert report["hops"]["zmq_ms"] > 0 and report["hops"]["ray_ms"] > 0
    switch = report["switch_breakdown"]["transformers"]
    assert switch["switches"] > 0 and switch["member_ms"] > 0 and switch["switch_ms"] > switch["member_ms"]
    table = (out / "bench.md").read_text()
    assert table.startswith("| method | ms/token mean") and "| me |" in table and "| me-http |" in table
    assert table in done.stdout  # the CLI prints the table it wrote
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_vllm_rows_follow_their_own_transformers_rows_and_get_their_ratios(tiny_dir, tmp_path):
    """The rows and ratios of a bench over both engines (the vLLM members themselves run in
    tests/test_vllm.py; a second bench run would only repeat them)."""
    from mixserve.bench.methods import MethodResult, methods, summarize
    from mixserve.bench.report import markdown, write_report
    from mixserve.config import load_config

    config = load_config(tiny_dir / "ensemble.yaml")
    plan = methods(config, ("transformers", "vllm"))
    assert list(plan) == METHODS[:6] + ["me-http", "vllm single:a", "vllm single:b", "vllm ce-parallel", "vllm me",
                                        "vllm me-ray-calls"]
    assert {plan[n]["engine"] for n in plan if n.startswith("vllm ")} == {"vllm"}
    ms = {"single:a": 10, "single:b": 20, "vllm single:a": 5, "vllm single:b": 10, "me": 18, "vllm me": 9,
          "ce-parallel": 30, "ce-sequential": 35, "me-http": 20, "vllm ce-parallel": 15, "me-ray-calls": 27,
          "vllm me-ray-calls": 18}
    results = {n: MethodResult(n, 2, 16, ms_per_token_median=ms[n] - 1, ms_per_token_p99=ms[n], ms_per_token_mean=ms[n],
                               switches_per_token=0.5 if n.endswith("me") else 0.0, ttft_s_median=0.1,
                               forwards_per_token=1.0, trips_per_token=0.5,
                               tokens_per_s={1: 1000 / ms[n], 4: 4000 / ms[n]}) for n in plan}
    report = summarize(config, results, dict(prompt_tokens=8, max_tokens=8, concurrency=[1, 4], repeats=2, rounds=1),
                       {"zmq_ms": 0.1, "ray_ms": 0.8})
    r = report["ratios"]
    assert r["vllm_single_over_transformers"] == {"a": 0.5, "b": 0.5}
    assert r["vllm_floor_ms"] == 7.5 and r["vllm_me_over_floor"] == 1.2
    assert r["switch_ms"] == 6.0 and r["vllm_switch_ms"] == 3.0  # (18 - 15) / 0.5 and (9 - 7.5) / 0.5
    assert r["me_ray_calls_over_me"] == 1.5 and r["vllm_me_ray_calls_over_me"] == 2.0
    assert r["vllm_me_throughput_over_transformers_me_at_4"] == 2.0
    assert "ME on vLLM / ME on transformers: **2.00x**" in markdown(report)

    # `--engines vllm` alone: its rows, ratios, table and plot, none of the default engine's
    only = {n: results[n] for n in plan if n.startswith("vllm ")}
    alone = summarize(config, only, dict(prompt_tokens=8, max_tokens=8, concurrency=[1, 4], repeats=2, rounds=1),
                      {"zmq_ms": 0.1, "ray_ms": 0.8})
    assert alone["ratios"]["vllm_me_over_floor"] == 1.2 and "me_over_floor" not in alone["ratios"]
    assert "vllm engine: floor" in markdown(alone) and "transformers engine" not in markdown(alone)
    write_report(alone, tmp_path)
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_bench_measures_sim_members_only_when_asked():
    from mixserve.bench.methods import default_engines

    assert "transformers" in default_engines() and "sim" not in default_engines()  # it runs no model

"""A small `mixserve bench --scale` (mixserve/bench/scale.py) on fast simulated members: a second replica
per member nearly doubles the tokens/s of a pool that one replica saturates (max_batch 4), the report
has its documented fields, and under a load ramp the autoscaled heavy pool grows past the light one,
both come back to one replica, and no request is lost."""
import json

import pytest

from mixserve.bench.scale import Plan, ramp_levels, run_scale

ROW = {"member_replicas", "router_replicas", "concurrency", "tokens_per_s", "p50_ms", "p99_ms",
       "router_cpu_us_per_token", "router_cores", "requests", "errors"}
PLAN = Plan(sim={"step_ms": 10, "per_seq_ms": 0.5}, max_batch=4, max_tokens=32, grid=((2, 1, 16), (1, 1, 16)),
            warm_s=1.0, measure_s=2.0, ramp=ramp_levels(12, 3, 12, 3), target_sessions=2.0, max_replicas=4,
            scale_delay_s=1.0, settle_s=45.0)


@pytest.fixture(scope="module")
def report(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("scale")
    run_scale(out, PLAN)
    return out


def test_a_second_replica_per_member_raises_the_throughput_of_a_saturated_pool(report):
    data = json.loads((report / "scale.json").read_text())
    rows = {r["member_replicas"]: r for r in data["rows"]}
    assert set(rows) == {1, 2}
    for r in rows.values():
        assert set(r) == ROW and r["errors"] == 0 and r["requests"] > 0
        assert r["p99_ms"] >= r["p50_ms"] > 0 and r["router_cpu_us_per_token"] > 0
    # one replica of a computes 4 sessions a tick of the 13 that wait on it, two compute 8: about 2x
    assert rows[2]["tokens_per_s"] > 1.4 * rows[1]["tokens_per_s"], rows
    table = (report / "scale.md").read_text()
    assert table.startswith("| member replicas | router replicas | concurrency | tokens/s |")
    assert (report / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_under_a_load_ramp_the_heavy_pool_grows_past_the_light_and_both_shrink_back(report):
    ramp = json.loads((report / "scale.json").read_text())["ramp"]
    assert ramp["heavy"] == "a" and ramp["requests"] > 12
    assert ramp["lost"] == 0, ramp["lost_examples"]
    assert ramp["peak"]["a"] > ramp["peak"]["b"], ramp["sizes"]
    assert ramp["sizes"][-1][1] == {"a": 1, "b": 1} and ramp["back_to_min_s"] is not None, ramp["sizes"]

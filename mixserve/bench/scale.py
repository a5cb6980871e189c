"""`mixserve bench --scale`: routers and member pools at scale, on simulated members (engine sim,
`mixserve models sim`: a 0.8 / b 0.2, a step of 20 ms + 0.5 ms per session in the batch, max_batch 32).

Two parts, in one sitting:
- a grid of closed-loop loads: tokens/s, p50/p99 ms between a request's tokens and each router's CPU
  per token, against replicas per member, router replicas and concurrency. One keeper (cluster/pools.py)
  serves the whole grid: it starts the largest pools and shrinks them between rows (a replica that
  leaves is drained and stopped), which costs no start-up. Each router replica is a Ray actor
  (mixserve/bench/scale_load.py) attached to the same pools, as Serve's ingress replicas are.
- a load ramp on autoscaled pools: clients climb, hold and fall; the pools' sizes each second and every
  request's end (max_tokens tokens, no error) are recorded, then how long the pools take back to their
  minimum.
Writes scale.json, scale.md and scale.png (mixserve/bench/scale_report.py).
"""
from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mixserve.models.sim import SIM

# (member replicas, router replicas, concurrency), each pool size's rows together, largest pools first
GRID = ((8, 1, 16), (8, 1, 128), (8, 2, 128), (8, 4, 128), (8, 1, 256), (8, 2, 256), (8, 4, 256),
        (4, 1, 16), (4, 1, 128), (2, 1, 16), (2, 1, 128), (1, 1, 16), (1, 1, 128))
HEAVY_OVER_LIGHT = 4  # the ramp's target: the pools in proportion to the weights, 0.8 / 0.2
SAMPLE_S = 1.0  # how often the ramp reads the pools' sizes


def ramp_levels(peak: int, up_s: int, hold_s: int, down_s: int) -> tuple[int, ...]:
    """Clients in each second: a climb to `peak`, a hold, a fall to 0."""
    up = [round(peak * (i + 1) / up_s) for i in range(up_s)]
    down = [round(peak * (down_s - 1 - i) / down_s) for i in range(down_s)]
    return tuple(up + [peak] * hold_s + down)


@dataclass(frozen=True)
class Plan:
    """What the bench runs; the defaults are sized for 5 minutes on a quiet 2-core machine, most of it start-up
    and the ramp."""

    sim: dict = field(default_factory=lambda: dict(SIM))  # each member's step: step_ms + per_seq_ms * batch
    max_batch: int = 32
    max_tokens: int = 64
    grid: tuple[tuple[int, int, int], ...] = GRID
    warm_s: float = 2.0  # each row's load runs this long before its window opens
    measure_s: float = 4.0
    # Clients per second. At the peak the pools compute about 0.8 x 34 and 0.2 x 34 sessions: 7 and 2
    # replicas at 4 each, the middle of the sizes that keep a at 4x b within one replica.
    ramp: tuple[int, ...] = ramp_levels(34, 15, 25, 10)
    target_sessions: float = 4.0  # the ramp's pools: busy sessions per replica, 1 to max_replicas
    max_replicas: int = 8
    scale_delay_s: float = 2.0  # upscale and downscale delay
    settle_s: float = 60.0  # after the ramp, the bound on waiting for the pools to return to one replica


def members(plan: Plan, **scale) -> dict:
    """The config as a mapping: sim members a (0.8) and b (0.2), each with `scale`'s keys."""
    from mixserve.models.sim import sim_config

    config = sim_config()
    for m in config["members"]:
        m.update(max_batch=plan.max_batch, sim=dict(plan.sim), **scale)
    return config


def run_scale(out: str | Path, plan: Plan = Plan(), address: str | None = None) -> dict:
    import ray

    from mixserve.bench.methods import hardware
    from mixserve.cluster.ray_cluster import connect
    from mixserve.config import parse_config
    from mixserve.serving.ensemble import build_ensemble

    from .scale_load import LoadRouter
    from .scale_report import write_report

    connect(address)
    top = max(m for m, _, _ in plan.grid)
    grid_config = parse_config(members(plan, replicas=top), ".")
    autoscaling = {"min_replicas": 1, "max_replicas": plan.max_replicas, "target_sessions": plan.target_sessions,
                   "upscale_delay_s": plan.scale_delay_s, "downscale_delay_s": plan.scale_delay_s}
    ramp_config = parse_config(members(plan, autoscaling=autoscaling), ".")
    # Every process starts at once (the routers' while the members load): start-up is most of the wait.
    actor = ray.remote(LoadRouter).options(num_cpus=0)
    routers = [actor.remote(i) for i in range(max(r for _, r, _ in plan.grid) + 1)]
    with ThreadPoolExecutor(2) as pool:
        grid_ens, ramp_ens = pool.map(build_ensemble, (grid_config, ramp_config))
    try:
        grid_routers, ramp_router = routers[:-1], routers[-1]
        ray.get([r.attach.remote(grid_config, grid_ens.keeper) for r in grid_routers]
                + [ramp_router.attach.remote(ramp_config, ramp_ens.keeper)])
        rows = [_row(plan, grid_ens.keeper, grid_routers, *cell) for cell in plan.grid]
        for r in grid_routers:
            ray.kill(r)
        grid_ens.close()  # the ramp runs alone
        ramp = _ramp(plan, ramp_ens.keeper, ramp_router, ramp_config)
    finally:
        for r in routers:
            ray.kill(r)
        grid_ens.close()
        ramp_ens.close()
    report = {"settings": {**asdict(plan), "weights": grid_config.weights}, "hardware": hardware(),
              "rows": rows, "targets": targets(rows), "ramp": ramp}
    write_report(report, Path(out))
    return report


def _row(plan: Plan, keeper, routers: list, member_replicas: int, router_replicas: int, concurrency: int) -> dict:
    import ray

    for name in ("a", "b"):
        ray.get(keeper.resize.remote(name, member_replicas), timeout=60)
    ray.get([r.refresh.remote() for r in routers[:router_replicas]], timeout=60)
    shares = [concurrency // router_replicas + (i < concurrency % router_replicas) for i in range(router_replicas)]
    start = time.time() + 0.5  # every router replica's clients begin together
    seen = ray.get([r.closed_loop.remote(n, start, plan.warm_s, plan.measure_s, plan.max_tokens)
                    for r, n in zip(routers, shares)], timeout=plan.warm_s + plan.measure_s + 120)
    tokens = sum(s["tokens"] for s in seen)
    gaps = sorted(g for s in seen for g in s["gaps_ms"])
    return {
        "member_replicas": member_replicas, "router_replicas": router_replicas, "concurrency": concurrency,
        "tokens_per_s": tokens / plan.measure_s,
        "p50_ms": statistics.median(gaps) if gaps else None,
        "p99_ms": gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))] if gaps else None,
        # each router process's CPU over the tokens it carried, averaged over the replicas
        "router_cpu_us_per_token": statistics.mean(1e6 * s["cpu_s"] / s["tokens"] for s in seen if s["tokens"])
        if tokens else None,
        "router_cores": sum(s["cpu_s"] for s in seen) / plan.measure_s / router_replicas,
        "requests": sum(s["requests"] for s in seen), "errors": sum(s["errors"] for s in seen),
    }


def _ramp(plan: Plan, keeper, router, config) -> dict:
    """The ramp through one router replica, the pools' sizes every SAMPLE_S while it runs and after it,
    until each pool is back to its minimum (or settle_s)."""
    import ray

    start = time.time() + 1.0
    done = router.ramp.remote(list(plan.ramp), 1.0, start, plan.max_tokens)
    sizes: list[tuple[float, dict[str, int]]] = []
    lowest = {m.name: m.autoscaling.min_replicas for m in config.members}
    ended = None
    while True:
        sizes.append((round(time.time() - start, 2), ray.get(keeper.sizes.remote(), timeout=30)))
        if ended is None and ray.wait([done], timeout=SAMPLE_S)[0]:
            ended = time.time() - start
        elif ended is not None:
            if sizes[-1][1] == lowest or time.time() - start > ended + plan.settle_s:
                break
            time.sleep(SAMPLE_S)  # the sampling period of the series, not a wait for an event
    requests = ray.get(done, timeout=60)["requests"]
    lost = [r for r in requests if r[3] is not None or r[2] != plan.max_tokens]
    heavy, light = sorted(config.weights, key=config.weights.get, reverse=True)
    peak = {name: max(s[name] for _, s in sizes) for name in (heavy, light)}
    back = next((t for t, s in sizes if t > ended and s == lowest), None)
    return {
        "levels": list(plan.ramp), "step_s": 1.0, "ended_s": round(ended, 2), "sizes": sizes,
        "requests": len(requests), "lost": len(lost), "lost_examples": [r[3] for r in lost[:5]],
        "heavy": heavy, "light": light, "peak": peak,
        "heavy_over_light_met": abs(peak[heavy] - HEAVY_OVER_LIGHT * peak[light]) <= 1,
        "back_to_min_s": None if back is None else round(back - ended, 2),
    }


def targets(rows: list[dict]) -> dict:
    """Issue 29's figures from the grid: 4 replicas per member over 1 at concurrency 128 (one router),
    and 2 router replicas over 1 at the largest pools' highest concurrency."""
    at = {(r["member_replicas"], r["router_replicas"], r["concurrency"]): r["tokens_per_s"] for r in rows}
    out = {}
    if (4, 1, 128) in at and (1, 1, 128) in at:
        ratio = at[(4, 1, 128)] / at[(1, 1, 128)]
        out["members_4_over_1_at_128"] = {"ratio": ratio, "target": 3.2, "met": ratio >= 3.2}
    routed = [(m, c) for m, r, c in at if r == 2 and (m, 1, c) in at]
    if routed:
        m, c = max(routed)
        ratio = at[(m, 2, c)] / at[(m, 1, c)]
        out["routers_2_over_1"] = {"member_replicas": m, "concurrency": c, "ratio": ratio, "target": 1.7,
                                   "met": ratio >= 1.7}
    return out

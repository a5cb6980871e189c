"""`mixserve bench --colocate`: a base and two experts of it (LoRA adapters), each in its own process
against all three in one (`colocate: true`, docs/architecture.md "Co-located experts"), in one sitting.

Per layout: each member alone, ME and ce-parallel (ms per token at batch 1, tokens/s at each
concurrency, model calls per token: under CE the group's members share one), what one ME switch costs over the floor sum(lambda_i t_i), and the
resident memory of the members' processes (psutil, on this node). Writes colocate.json and colocate.md.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, replace
from pathlib import Path

import ray

from mixserve.config import load_config

from .methods import _one_method, measure, on_engine

LAYOUTS = ("separate", "co-located")


def run_colocate(config_path: str, prompt_tokens: int = 64, max_tokens: int = 128, concurrency=(1, 16),
                 repeats: int = 5, out: str | Path = "bench-out", address: str | None = None,
                 engine: str | None = None) -> dict:
    """`engine`: run the members on it (as the config's, by default)."""
    import psutil

    from mixserve.serving.ensemble import build_ensemble

    config = load_config(config_path)
    if engine is not None:
        config = on_engine(config, engine)
    waves = {c: repeats if c == 1 else c for c in concurrency}
    plan = {f"single:{m.name}": {"method": "single", "member": m.name} for m in config.members}
    plan.update({"me": {"method": "me"}, "ce-parallel": {"method": "ce"}})
    layouts = {}
    for layout in LAYOUTS:
        with build_ensemble(replace(config, colocate=layout == "co-located"), address=address) as ensemble:
            rows, forwards = {}, {}
            for name, fields in plan.items():
                tokens, before = [0], _forwards(ensemble)
                rows[name] = asyncio.run(_one_method(lambda req: _counted(ensemble.router, req, tokens), name,
                                                     fields, prompt_tokens, max_tokens, waves, lambda: None))
                forwards[name] = (_forwards(ensemble) - before) / max(1, tokens[0])
            pids = ray.get(ensemble.keeper.pids.remote(), timeout=60)
            rss = {rid: psutil.Process(pid).memory_info().rss for rid, pid in pids.items()}
        layouts[layout] = {"methods": {k: asdict(v) for k, v in rows.items()}, "rss_bytes": rss,
                           "model_forwards_per_token": forwards, **summary(config.weights, rows, max(concurrency))}
    one = layouts["separate"]["rss_bytes"]
    report = {"settings": dict(prompt_tokens=prompt_tokens, max_tokens=max_tokens, concurrency=list(concurrency),
                               repeats=repeats), "engine": config.members[0].engine, "weights": config.weights,
              "layouts": layouts,
              "rss_one_member_bytes": min(one.values()),
              "rss_co_located_over_one_member": sum(layouts["co-located"]["rss_bytes"].values()) / min(one.values())}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "colocate.json").write_text(json.dumps(report, indent=2))
    (out / "colocate.md").write_text(markdown(report))
    return report


async def _counted(router, req, tokens: list[int]):
    run = await measure(router, req)
    tokens[0] += run.tokens
    return run


def _forwards(ensemble) -> int:
    """Model calls run so far by every member process (a group's: each counted once, by the member
    whose core ran it: actors/group.py)."""
    return sum(ray.get(actor.stats.remote(), timeout=60)["forwards"] for actor in ensemble.actors.values())


def summary(weights: dict[str, float], rows: dict, top: int) -> dict:
    t = {m: rows[f"single:{m}"].ms_per_token_mean for m in weights}
    floor = sum(weights[m] * t[m] for m in weights) if all(t.values()) else None
    me = rows["me"]
    slower = me.ms_per_token_mean - floor if me.ms_per_token_mean and floor else None
    return {"floor_ms": floor, "me_ms": me.ms_per_token_mean,
            "switch_ms": slower / me.switches_per_token if slower is not None and me.switches_per_token else None,
            "ce_parallel_ms": rows["ce-parallel"].ms_per_token_mean,
            f"me_tokens_per_s_at_{top}": me.tokens_per_s.get(top),
            f"ce_parallel_tokens_per_s_at_{top}": rows["ce-parallel"].tokens_per_s.get(top)}


def markdown(report: dict) -> str:
    top = max(report["settings"]["concurrency"])

    def num(value, fmt="{:.1f}"):
        return "-" if value is None else fmt.format(value)

    head = ["layout", "ME ms/token", "floor ms", "switch ms", "ce-parallel ms/token", "ce model calls/token",
            f"ME tok/s @{top}", f"ce-parallel tok/s @{top}", "members' RSS MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for layout, r in report["layouts"].items():
        lines.append("| " + " | ".join([
            layout, num(r["me_ms"]), num(r["floor_ms"]), num(r["switch_ms"]), num(r["ce_parallel_ms"]),
            num(r["model_forwards_per_token"]["ce-parallel"], "{:.2f}"), num(r[f"me_tokens_per_s_at_{top}"]),
            num(r[f"ce_parallel_tokens_per_s_at_{top}"]), num(sum(r["rss_bytes"].values()) / 2**20, "{:.0f}")]) + " |")
    lines += ["", f"- engine: {report.get('engine', 'transformers')}",
              f"- resident memory, co-located ensemble / one member alone: "
                  f"**{report['rss_co_located_over_one_member']:.2f}x** "
                  f"(one member {report['rss_one_member_bytes'] / 2**20:.0f} MiB)"]
    return "\n".join(lines) + "\n"

"""`mixserve bench --calibrate DIR`: engine sim's step time (docs/configuration.md, "Engines") fitted
from a bench run's rows, so that simulated members stand in for measured ones.

A sim tick lasts step_ms + per_seq_ms × n for n sessions. Each `single:<member>` row of bench.json
(mixserve/bench/methods.py) gives two points of that line: its mean ms per token at batch 1 (one
session a tick) and its tokens/s at the highest concurrency c (c sessions a tick, so a tick lasts
1000·c / tokens_per_s ms), assuming the member batches all c (max_batch ≥ c: 16 by default, as the
bench's top concurrency). The line through them is the fit. Both points hold what a token costs past the
member (the router, the hop), so the fitted step is a little slower than the member's forward alone.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from mixserve.engines import DEFAULT

SINGLE = "single:"


def calibrate(report: dict) -> dict[str, dict[str, dict[str, float]]]:
    """engine -> member -> {step_ms, per_seq_ms}, for every single-member row the run measured."""
    fits: dict[str, dict[str, dict[str, float]]] = {}
    for name, row in report["methods"].items():
        engine, _, method = name.rpartition(" ")
        if not method.startswith(SINGLE) or row.get("skipped") or not row.get("ms_per_token_mean"):
            continue
        alone = row["ms_per_token_mean"]
        levels = {int(c): tps for c, tps in row["tokens_per_s"].items() if int(c) > 1 and tps}
        per_seq = 0.0
        if levels:
            c = max(levels)
            per_seq = max(0.0, (1000 * c / levels[c] - alone) / (c - 1))
        step = max(0.0, alone - per_seq)
        fits.setdefault(engine or DEFAULT, {})[method[len(SINGLE):]] = {"step_ms": round(step, 2),
                                                                        "per_seq_ms": round(per_seq, 3)}
    return fits


def calibration_text(bench_dir: str | Path) -> str:
    """The fit as YAML to paste into a config's sim members, one block per engine measured."""
    path = Path(bench_dir) / "bench.json"
    if not path.is_file():
        raise ValueError(f"{path} not found: --calibrate takes the --out folder of a `mixserve bench` run")
    fits = calibrate(json.loads(path.read_text()))
    if not fits:
        raise ValueError(f"{path} holds no single-member rows to fit (every one skipped?)")
    lines = [f"# engine sim's keys fitted from {path}: step_ms + per_seq_ms x sessions per tick"]
    for engine, members in fits.items():
        lines.append(f"# members as measured on engine {engine}:")
        members_yaml = [{"name": member, "engine": "sim", "sim": sim} for member, sim in members.items()]
        lines.append(yaml.safe_dump({"members": members_yaml}, sort_keys=False, default_flow_style=None).rstrip())
    return "\n".join(lines)

"""bench.json, bench.md (the table docs/performance.md shows) and bench.png from one `mixserve bench` report."""
from __future__ import annotations

import json
from pathlib import Path

from mixserve.engines import DEFAULT, ENGINES


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    (out / "bench.md").write_text(markdown(report))
    plot(report, out / "bench.png")


def _num(value, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def markdown(report: dict) -> str:
    s, hw = report["settings"], report["hardware"]
    levels = s["concurrency"]
    head = ["method", "ms/token mean", "p50", "p99", "TTFT s", "forwards/token", "switches/token"] + \
        [f"tok/s @{c}" for c in levels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in report["methods"].items():
        if m["skipped"]:
            lines.append(f"| {name} | skipped: {m['skipped']} |" + " |" * (len(head) - 2))
            continue
        cells = [name, _num(m["ms_per_token_mean"]), _num(m["ms_per_token_median"]), _num(m["ms_per_token_p99"]),
                 _num(m["ttft_s_median"], "{:.3f}"), _num(m["forwards_per_token"], "{:.2f}"),
                 _num(m["switches_per_token"], "{:.2f}")]
        cells += [_num(m["tokens_per_s"].get(c, m["tokens_per_s"].get(str(c)))) for c in levels]
        lines.append("| " + " | ".join(cells) + " |")
    r = report["ratios"]
    top = max(levels)
    lines.append("")
    for engine, k in _engines(r):
        lines += [
            f"- {engine}: floor sum(lambda_i t_i) {_num(r[k + 'floor_ms'])} ms/token; ME / floor: "
            f"**{_num(r[k + 'me_over_floor'], '{:.2f}')}**; one switch costs **{_num(r[k + 'switch_ms'], '{:.1f}')} ms** "
            f"({_num(r[k + 'me_switches_per_token'], '{:.2f}')} switches per token); ME with every step a Ray call "
            f"is {_num(r[k + 'me_ray_calls_over_me'], '{:.2f}')}x slower",
            f"- {engine}: ME speedup "
            + (f"over ce-sequential **{_num(r[k + 'me_speedup_over_ce_sequential'], '{:.2f}')}x**, "
               if k + "me_speedup_over_ce_sequential" in r else "")
            + f"over ce-parallel {_num(r[k + 'me_speedup_over_ce_parallel'], '{:.2f}')}x; throughput at {top}, "
            f"ME / ce-parallel **{_num(r.get(f'{k}me_throughput_over_ce_parallel_at_{top}'), '{:.2f}')}x**",
        ]
    for engine, spec in ENGINES.items():
        if (value := r.get(f"{engine}_me_throughput_over_{DEFAULT}_me_at_{top}")) is not None:
            lines.append(f"- throughput at concurrency {top}, ME on {spec.label} / ME on {DEFAULT}: "
                         f"**{_num(value, '{:.2f}')}x**")
    for engine, b in (report.get("switch_breakdown") or {}).items():
        if b:
            lines.append(f"- one switch on {engine}, medians of {b['switches']}: last token of one member to first of "
                         f"the next {b['switch_ms']:.1f} ms = router {b['router_ms']:.2f} + hops {b['hops_ms']:.2f} + "
                         f"member {b['member_ms']:.1f} (its wake-up, catch-up, one forward and sampling)")
    hops = report.get("hops") or {}
    lines += [
        f"- ME router round trips per token: {_num(report['methods'].get('me', {}).get('trips_per_token'), '{:.2f}')} "
        f"(theory 1 - sum(lambda_i^2) = {r['me_trips_per_token_theory']:.2f})",
        f"- ME over HTTP streaming / ME in process, ms per token at batch 1: **{_num(r.get('me_http_over_me'), '{:.2f}')}**",
        f"- a bare hop, round trip of a tiny message to another process: ZMQ {_num(hops.get('zmq_ms'), '{:.2f}')} ms, "
        f"Ray call {_num(hops.get('ray_ms'), '{:.2f}')} ms",
    ]
    lines += [
        "",
        f"{s['prompt_tokens']} prompt words, {s['max_tokens']} max tokens, {s['repeats']} requests at batch 1; "
        f"{hw['cpu']} ({hw['cpus']} cores), GPU: {hw['gpu'] or 'none'}, torch {hw['torch']}."
        + (f" {hw['simulation'].capitalize()}." if hw["simulation"] else ""),
    ]
    return "\n".join(lines) + "\n"


def _engines(ratios: dict) -> list[tuple[str, str]]:
    """(engine label, its ratio keys' prefix) for every engine in the report, the default first."""
    others = sorted(k[: -len("_me_over_floor")] for k in ratios if k.endswith("_me_over_floor") and k != "me_over_floor")
    default = [(f"{DEFAULT} engine", "")] if "me_over_floor" in ratios else []  # not when --engines left it out
    return default + [(f"{e} engine", f"{e}_") for e in others]


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = {k: m for k, m in report["methods"].items() if not m["skipped"]}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, m in shown.items():
        levels = sorted(int(c) for c in m["tokens_per_s"])
        left.plot(levels, [m["tokens_per_s"].get(c, m["tokens_per_s"].get(str(c))) for c in levels], marker="o",
                  label=name)
    left.set(xscale="log", xlabel="concurrent requests", ylabel="tokens / s", title="Throughput")
    left.set_xticks(report["settings"]["concurrency"], [str(c) for c in report["settings"]["concurrency"]])
    left.legend(fontsize=8)
    names = list(shown)
    right.bar(names, [shown[n]["ms_per_token_median"] or 0 for n in names], color="tab:blue", label="p50")
    right.scatter(names, [shown[n]["ms_per_token_p99"] or 0 for n in names], color="black", marker="_", s=300,
                  label="p99", zorder=3)
    for engine, k in _engines(report["ratios"]):
        if floor := report["ratios"].get(k + "floor_ms"):
            right.axhline(floor, color="tab:red", linestyle="--", label=f"floor sum(lambda t), {engine}")
    right.set(ylabel="ms / token", title="Latency at batch 1")
    right.tick_params(axis="x", labelrotation=30)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

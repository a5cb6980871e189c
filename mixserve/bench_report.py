"""bench.json, bench.md (the table README shows) and bench.png from one `mixserve bench` report."""
from __future__ import annotations

import json
from pathlib import Path


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
    head = ["method", "ms/token p50", "p99", "TTFT s", "forwards/token", "trips/token"] + [f"tok/s @{c}" for c in levels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in report["methods"].items():
        if m["skipped"]:
            lines.append(f"| {name} | skipped: {m['skipped']} |" + " |" * (len(head) - 2))
            continue
        cells = [name, _num(m["ms_per_token_median"]), _num(m["ms_per_token_p99"]), _num(m["ttft_s_median"], "{:.3f}"),
                 _num(m["forwards_per_token"], "{:.2f}"), _num(m["trips_per_token"], "{:.2f}")]
        cells += [_num(m["tokens_per_s"].get(c, m["tokens_per_s"].get(str(c)))) for c in levels]
        lines.append("| " + " | ".join(cells) + " |")
    r = report["ratios"]
    top = max(levels)
    lines += [
        "",
        f"- floor sum(lambda_i t_i): {_num(r['floor_ms'])} ms/token; ME / floor: **{_num(r['me_over_floor'], '{:.2f}')}**",
        f"- ME speedup over ce-sequential: **{_num(r['me_speedup_over_ce_sequential'], '{:.2f}')}x**; "
        f"over ce-parallel: {_num(r['me_speedup_over_ce_parallel'], '{:.2f}')}x",
        f"- throughput at concurrency {top}, ME / ce-parallel: "
        f"**{_num(r.get(f'me_throughput_over_ce_parallel_at_{top}'), '{:.2f}')}x**",
        f"- ME router round trips per token: {_num(report['methods'].get('me', {}).get('trips_per_token'), '{:.2f}')} "
        f"(theory 1 - sum(lambda_i^2) = {r['me_trips_per_token_theory']:.2f})",
        f"- ME over HTTP streaming / ME in process, ms per token at batch 1: **{_num(r.get('me_http_over_me'), '{:.2f}')}**",
    ]
    if "vllm_me_over_floor" in r:
        singles = ", ".join(f"{m} {_num(v, '{:.2f}')}" for m, v in r["vllm_single_over_transformers"].items())
        lines += [
            f"- vLLM engine: single-member ms/token over the transformers engine's: **{singles}**",
            f"- vLLM engine: floor {_num(r['vllm_floor_ms'])} ms/token; ME / floor: **{_num(r['vllm_me_over_floor'], '{:.2f}')}**; "
            f"ME speedup over ce-parallel: {_num(r['vllm_me_speedup_over_vllm_ce_parallel'], '{:.2f}')}x",
            f"- throughput at concurrency {top}, ME on vLLM / ME on transformers: "
            f"**{_num(r.get(f'vllm_me_throughput_over_transformers_me_at_{top}'), '{:.2f}')}x**",
        ]
    lines += [
        "",
        f"{s['prompt_tokens']} prompt words, {s['max_tokens']} max tokens, {s['repeats']} requests at batch 1; "
        f"{hw['cpu']} ({hw['cpus']} cores), GPU: {hw['gpu'] or 'none'}, torch {hw['torch']}."
        + (f" {hw['simulation'].capitalize()}." if hw["simulation"] else ""),
    ]
    return "\n".join(lines) + "\n"


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
    floor = report["ratios"]["floor_ms"]
    if floor:
        right.axhline(floor, color="tab:red", linestyle="--", label="floor sum(lambda t)")
    right.set(ylabel="ms / token", title="Latency at batch 1")
    right.tick_params(axis="x", labelrotation=30)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

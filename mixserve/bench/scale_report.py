"""scale.json, scale.md (the table docs/performance.md shows) and scale.png from one `mixserve bench
--scale` report (mixserve/bench/scale.py), as mixserve/bench/report.py writes the bench's."""
from __future__ import annotations

import json
from pathlib import Path

from .report import _num


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(report, indent=2))
    (out / "scale.md").write_text(markdown(report))
    plot(report, out / "scale.png")


def _met(target: dict) -> str:
    return "met" if target["met"] else "**not met**"


def markdown(report: dict) -> str:
    head = ["member replicas", "router replicas", "concurrency", "tokens/s", "p50 ms", "p99 ms",
            "router CPU µs/token", "router cores", "errors"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["rows"]:
        lines.append("| " + " | ".join([
            str(r["member_replicas"]), str(r["router_replicas"]), str(r["concurrency"]), _num(r["tokens_per_s"], "{:.0f}"),
            _num(r["p50_ms"]), _num(r["p99_ms"]), _num(r["router_cpu_us_per_token"], "{:.0f}"),
            _num(r["router_cores"], "{:.2f}"), str(r["errors"])]) + " |")
    lines.append("")
    t = report["targets"]
    if m := t.get("members_4_over_1_at_128"):
        lines.append(f"- 4 replicas per member / 1, tokens/s at concurrency 128: **{m['ratio']:.2f}x** "
                     f"(target {m['target']}x: {_met(m)})")
    if r := t.get("routers_2_over_1"):
        lines.append(f"- 2 router replicas / 1, tokens/s at {r['member_replicas']} replicas per member and "
                     f"concurrency {r['concurrency']}: **{r['ratio']:.2f}x** (target {r['target']}x: {_met(r)})")
    ramp = report["ramp"]
    heavy, light = ramp["heavy"], ramp["light"]
    back = ramp["back_to_min_s"]
    lines += [
        f"- load ramp, {max(ramp['levels'])} clients at its peak over {len(ramp['levels'])} s: the pools grew to "
        f"{heavy} **{ramp['peak'][heavy]}** and {light} **{ramp['peak'][light]}** replicas (target {heavy} about 4x "
        f"{light}, within 1: {'met' if ramp['heavy_over_light_met'] else '**not met**'}); "
        + (f"both back to their minimum {back:.0f} s after the last request" if back is not None
           else "**not back to their minimum** when the bench stopped waiting")
        + f"; {ramp['requests']} requests, **{ramp['lost']} lost**"
        + (f" ({'; '.join(ramp['lost_examples'])})" if ramp["lost"] else ""),
    ]
    s, hw = report["settings"], report["hardware"]
    lines += ["", f"Sim members {', '.join(f'{k} {v}' for k, v in s['weights'].items())}, each step "
                  f"{s['sim']['step_ms']:g} ms + {s['sim']['per_seq_ms']:g} ms per session, max_batch {s['max_batch']}; "
                  f"method me, {s['max_tokens']} tokens a request; each row {s['measure_s']:g} s after "
                  f"{s['warm_s']:g} s of warm-up. {hw['cpu']} ({hw['cpus']} cores)."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    fig, (members, routers, ramp) = plt.subplots(1, 3, figsize=(15, 4.2))
    for c in sorted({r["concurrency"] for r in rows}):
        line = sorted((r["member_replicas"], r["tokens_per_s"]) for r in rows if r["concurrency"] == c and r["router_replicas"] == 1)
        if len(line) > 1:
            members.plot(*zip(*line), marker="o", label=f"concurrency {c}")
        top = max(r["member_replicas"] for r in rows)
        line = sorted((r["router_replicas"], r["tokens_per_s"]) for r in rows if r["concurrency"] == c and r["member_replicas"] == top)
        if len(line) > 1:
            routers.plot(*zip(*line), marker="o", label=f"concurrency {c}, {top} replicas per member")
    members.set(xscale="log", xlabel="replicas per member", ylabel="tokens / s", title="Member pools (1 router)")
    sizes = sorted({r["member_replicas"] for r in rows})
    members.set_xticks(sizes, [str(n) for n in sizes])
    members.minorticks_off()
    routers.set(xlabel="router replicas", ylabel="tokens / s", title="Router replicas")
    for ax in (members, routers):
        if ax.lines:  # a grid without that axis's rows draws none
            ax.legend(fontsize=8)
    r = report["ramp"]
    times = [t for t, _ in r["sizes"]]
    for name in (r["heavy"], r["light"]):
        ramp.step(times, [s[name] for _, s in r["sizes"]], where="post", label=f"{name} replicas")
    ramp.set(xlabel="seconds", ylabel="replicas", title="Load ramp: autoscaled pools")
    clients = ramp.twinx()
    clients.step(range(len(r["levels"]) + 1), r["levels"] + [0], where="post", color="grey", linestyle=":",
                 label="clients")
    clients.set_ylabel("clients")
    ramp.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

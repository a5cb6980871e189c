"""soak.json, soak.md and soak.png from one `mixserve soak` run: what was offered, what was done to
the server, and what the oracle found."""
from __future__ import annotations

import json
from pathlib import Path

from .load import Outcome

COLORS = {"member_kill": "tab:red", "pause": "tab:orange", "router_kill": "tab:purple"}


def write_report(report: dict, outcomes: list[Outcome], faults, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report = {**report, "timeline": [{"t0": round(o.t0, 3), "t1": round(o.t1, 3), "status": o.status,
                                      "code": o.code, "message": o.message[:160], "verdict": o.verdict,
                                      "spec": o.spec,
                                      "tokens": sum(o.member_tokens.values()) if o.status == 200 else 0}
                                     for o in outcomes]}
    (out / "soak.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "soak.md").write_text(markdown(report))
    plot(report, out / "soak.png")


def markdown(report: dict) -> str:
    s, st = report["summary"], report["settings"]
    f, p, a = s["faults"], s["prometheus"], s["availability"]
    growth = ", ".join(f"{m['name']} (pid {m['pid']}, {m['span_s']:g} s) {100 * m['growth']:+.1f}%" for m in s["memory"])
    roles = ", ".join(f"{m['name']} {m['warm_bytes'] / 2**20:.0f} → {m['end_bytes'] / 2**20:.0f} MiB "
                      f"({100 * m['growth']:+.1f}%, {m['processes']} process{'es' if m['processes'] > 1 else ''})"
                      for m in s["memory_roles"])
    lines = [
        f"# soak: {'passed' if s['passed'] else 'FAILED'}",
        "",
        f"{st['duration_s']:g} s of faults after {st['warmup_end_s']:g} s of warm-up, seed {st['seed']}, "
        f"topology {st['topology']}, "
        f"engines {st['engines']}, member_retry_s {st['retry_s']:g}, "
        f"max_concurrent_sessions {st['max_concurrent_sessions']}.",
        "",
        "| requests | member kills | pauses | router kills | disconnects | wrong texts | unexplained errors "
        "| leaked sessions | memory growth (max) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {s['requests']} | {f['member_kill']} | {f['pause']} | {f['router_kill']} | {f['disconnect']} "
        f"| {s['wrong_texts']} | {s['unexplained']} | {_leaked(s['leaked_sessions'])} "
        f"| {100 * s['memory_growth_max']:.1f}% |",
        "",
        f"- availability: {a['seconds_without_completion']} of the fault window's {a['window_s']} s without a "
        f"completed request ({100 * a['share_without_completion']:.1f}%, target at most "
        f"{100 * a['targets']['share_without_completion_max']:g}%); completed requests per second "
        f"{a['faults_per_s']:g} during faults against {a['warmup_per_s']:g} in the warm-up, ratio "
        f"{_ratio(a['ratio'])} (target at least {a['targets']['ratio_min']:g}): "
        f"{'met' if a['met'] else 'MISSED'}{'' if a['required'] else ' (not part of the verdict: see --availability)'}",
        f"- router replica kills: the next request completed {_waits(a.get('router_kill_to_next_completion_s'))}",
        f"- statuses: {s['statuses']}",
        f"- verdicts: {s['verdicts']}",
        f"- requests lost with a killed router replica (counted apart): {s['router_lost']}; "
        f"texts that changed after a crash where the engine allows it: {s['changed_after_crash']}; "
        f"a session's turns after such a turn (answered, no replayable reference): {s.get('after_a_changed_turn', 0)}",
        f"- named sessions continued after the soak: {s['sessions']['checked']}, wrong {s['sessions']['wrong']}, "
        f"continued after a turn whose answer was lost with its router: {s['sessions']['advanced_by_a_lost_turn']}; "
        f"after a turn whose text changed with a crash (answered, no replayable reference): "
        f"{s['sessions'].get('after_a_changed_turn', 0)}",
        f"- memory of each role after the soak against once warm-up was over: {roles}",
        f"- memory of each process at its end against once it had served as long as the warm-up (a restarted "
        f"member is a new process, measured from its own start): {growth}",
        f"- Prometheus: tokens per member, server {p['server_tokens']} against clients {p['client_tokens']} "
        f"(the server may count up to {p['tokens_unheard']} more, of requests whose end the clients did not hear, "
        f"and miss {p['tokens_in_last_intervals']}, answered in a killed router's last export interval); "
        f"429s server {p['server_429']}, clients {p['client_429']} ({p['429_in_last_intervals']} in such an "
        f"interval): {'agree' if p['agree'] else 'DISAGREE'}",
    ]
    if s["unrecovered"]:
        lines.append(f"- never came back: {s['unrecovered']}")
    if report["problems"]:
        lines += ["", "## Problems", ""] + [f"- {x}" for x in report["problems"]]
    return "\n".join(lines) + "\n"


def _ratio(ratio) -> str:
    return "none (nothing completed in the warm-up)" if ratio is None else f"{ratio:g}"


def _leaked(live) -> str:
    return "unknown (no answer)" if live is None else str(sum(live.values()))


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = report["timeline"]
    fig, (lat, thr, mem) = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True)
    ok = [o for o in timeline if o["status"] == 200]
    lat.scatter([o["t1"] for o in ok], [o["t1"] - o["t0"] for o in ok], s=3, label="200")
    refused = [o for o in timeline if o["status"] == 429]
    lat.scatter([o["t1"] for o in refused], [o["t1"] - o["t0"] for o in refused], s=2, c="0.75", label="429")
    bad = [o for o in timeline if o["status"] not in (200, 429, "disconnected")]
    lat.scatter([o["t1"] for o in bad], [o["t1"] - o["t0"] for o in bad], s=8, c="k", marker="x", label="other error")
    lat.set_ylabel("latency, s")
    lat.set_yscale("log")
    end = max((o["t1"] for o in timeline), default=1)
    bins = [0.0] * (int(end // 5) + 1)
    for o in ok:
        bins[int(o["t1"] // 5)] += o["tokens"] / 5
    thr.step([5 * k for k in range(len(bins))], bins, where="post")
    thr.set_ylabel("tokens/s (5 s bins)")
    _memory(mem, report["memory_series"])
    mem.set_xlabel("seconds since start")
    for f in report["faults"]:
        for ax in (lat, thr, mem):
            ax.axvspan(f["start"], f["end"] if f["end"] is not None else end, color=COLORS[f["kind"]], alpha=0.15)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.3) for c in COLORS.values()]
    lat.legend(lat.get_legend_handles_labels()[0] + handles,
               lat.get_legend_handles_labels()[1] + list(COLORS), loc="upper right", fontsize=7)
    lat.set_title("mixserve soak: " + ("passed" if report["summary"]["passed"] else "FAILED"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _memory(ax, series: list[dict]) -> None:
    """One line per process, one colour per role: a leak climbs across lives, a warm-up levels off."""
    names = sorted({x["name"] for x in series})
    for x in series:
        color = f"C{names.index(x['name'])}"
        ax.plot([t for t, _ in x["samples"]], [b / 2**20 for _, b in x["samples"]], color=color, lw=1,
                label=x["name"] if x is next(y for y in series if y["name"] == x["name"]) else None)
    ax.set_ylabel("resident memory, MiB")
    ax.legend(loc="lower right", fontsize=7)


def _waits(waits) -> str:
    return ", ".join(f"{w:g}" for w in waits) + " s after each" if waits else "(none killed)"

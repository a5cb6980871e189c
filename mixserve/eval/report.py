"""eval.json, eval.md (the table docs/evaluation.md shows) and eval.png from one `mixserve eval` report."""
from __future__ import annotations

import json
from pathlib import Path

from mixserve.eval.tasks import SUITES, Suite

HEADS = {"mixserve_arith": "arithmetic (exact match)",
         "mixserve_arith2": "two-digit arithmetic, x and / (exact match)",
         "mixserve_facts": "facts + arithmetic (exact match)",
         "mixserve_mc": "multiple choice (acc)", "mixserve_text": "held-out text (bits/byte, lower is better)",
         "mixserve_sums": "sums, worked (exact match)", "mixserve_clock": "clock times, worked (exact match)",
         "mixserve_sums_heldout": "sums, held-out phrasings", "mixserve_clock_heldout": "clock, held-out phrasings",
         "mixed": "mixed suite (mean of the three accuracies)",
         "mixed_heldout": "mixed suite, held-out phrasings (mean of the three)"}
FIXED_ROWS = {"me fixed", "ce fixed"}  # mixserve/eval/harness.py's rows with the config's weights beside a gate


def columns(suite: Suite) -> tuple[str, ...]:
    """A suite's table columns: its tasks, then its mixed scores."""
    return (*suite.generate, *suite.score, *suite.mixed)


def _suite(report: dict) -> Suite:
    return SUITES[report.get("suite", "default")]  # reports written before suites existed are the default's


def mixed(scores: dict, tasks: tuple[str, ...]) -> dict | None:
    """A mixed suite's score: the mean of its tasks' accuracies, its standard error from theirs
    (independent examples); None where a row lacks one of them."""
    if not all(t in scores for t in tasks):
        return None
    parts = [scores[t] for t in tasks]
    stderr = None if any(p["stderr"] is None for p in parts) else sum(p["stderr"] ** 2 for p in parts) ** 0.5 / len(parts)
    return {"metric": "mean accuracy", "value": sum(p["value"] for p in parts) / len(parts), "stderr": stderr,
            "n": sum(p["n"] for p in parts)}


def paired(a: dict, b: dict, suite: Suite = SUITES["default"]) -> dict[str, dict]:
    """Row a minus row b, question by question: task -> {diff, stderr, n}, for every accuracy task both
    rows scored on the same questions, and the mixed suite (the mean of its tasks' differences). Both
    rows answer the same questions, so the interval of the difference is what says whether one is
    above the other: it is much narrower than the two rows' own intervals when they agree on most
    questions, which two rows sharing a member do."""
    out = {}
    for task in (*suite.generate, "mixserve_mc"):
        x, y = a.get(task, {}).get("per_doc"), b.get(task, {}).get("per_doc")
        if not x or not y or len(x) != len(y):
            continue
        d = [p - q for p, q in zip(x, y)]
        n, mean = len(d), sum(d) / len(d)
        var = sum((v - mean) ** 2 for v in d) / (n - 1) if n > 1 else 0.0
        out[task] = {"diff": mean, "stderr": (var / n) ** 0.5, "n": n}
    for name, tasks in suite.mixed.items():
        if all(t in out for t in tasks):
            parts = [out[t] for t in tasks]
            out[name] = {"diff": sum(p["diff"] for p in parts) / len(parts),
                         "stderr": sum(p["stderr"] ** 2 for p in parts) ** 0.5 / len(parts),
                         "n": sum(p["n"] for p in parts)}
    return out


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    (out / "eval.md").write_text(markdown(report))
    plot(report, out / "eval.png")


def cell(score: dict | None) -> str:
    """value ± the half-width of its 95% interval (normal approximation), and n."""
    if score is None:
        return "n/a"
    ci = f" ± {1.96 * score['stderr']:.3f}" if score["stderr"] is not None else ""
    return f"{score['value']:.3f}{ci} (n={score['n']})"


def markdown(report: dict) -> str:
    tasks = columns(_suite(report))
    lines = ["| row | " + " | ".join(HEADS[t] for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
    for name, scores in report["rows"].items():
        lines.append(f"| {name} | " + " | ".join(cell(scores.get(t)) for t in tasks) + " |")
    missing = {name for name, scores in report["rows"].items() if any(t not in scores for t in tasks)}
    if missing - FIXED_ROWS:
        lines += ["", "n/a: the scored tasks need log-probs over one tokenizer; these members have different ones."]
    if missing & FIXED_ROWS:
        lines += ["", "n/a in the fixed rows: they run the generated tasks only (lm-eval's scoring requests carry no "
                      "weights, so the gate would weigh them)."]
    if report.get("carried"):
        lines += ["", f"Rows {', '.join(report['carried'])}: carried from the run before in the same folder (the same "
                      "config file, suite and questions); the other rows ran again."]
    lines += ["", "± is the half-width of a 95% interval (1.96 standard errors, lm-eval's)."]
    lines += _paired_lines(report)
    check = report.get("mixture_check")
    if check and check["p_value"] is None:
        lines += ["", f"ME samples the mixture: not checked, the members share no likely next token after "
                      f"{check['prompt']!r}."]
    elif check:
        lines += ["", f"ME samples the mixture: {check['samples']} one-token ME samples after {check['prompt']!r} "
                      f"against the mixture sum_i lambda_i p_i from the served log-probs"
                      + (f" (weights {_weights(check['weights'])}{', the gate' + chr(39) + 's for this prompt' if check.get('gated') else ''})"
                         if check.get("weights") else "") + ", chi-square over "
                      f"{check['categories']} categories: p = {check['p_value']:.3g} "
                      f"({'passed' if check['passed'] else 'FAILED'} at alpha = {check['alpha']:g})."]
    return "\n".join(lines) + "\n"


def _paired_lines(report: dict) -> list[str]:
    """The ensemble rows minus each member, question by question (paired()), where both have them."""
    members = [m for m in report.get("weights") or {} if m in report["rows"]]
    suite = _suite(report)
    pairs = [(name, m, paired(scores, report["rows"][m], suite)) for name, scores in report["rows"].items()
             if name not in members for m in members]
    pairs = [p for p in pairs if p[2]]
    if not pairs:
        return []
    tasks = [t for t in (*suite.generate, "mixserve_mc", *suite.mixed) if any(t in d for _, _, d in pairs)]
    lines = ["", "Paired differences (the same questions asked of both rows; ± the half-width of the 95% "
                 "interval of the difference; above means the interval excludes zero):", "",
             "| rows | " + " | ".join(HEADS[t] for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
    for name, member, diffs in pairs:
        lines.append(f"| {name} − {member} | " + " | ".join(_diff_cell(diffs.get(t)) for t in tasks) + " |")
    return lines


def _diff_cell(d: dict | None) -> str:
    if d is None:
        return "n/a"
    half = 1.96 * d["stderr"]
    verdict = " above" if d["diff"] - half > 0 else " below" if d["diff"] + half < 0 else ""
    return f"{d['diff']:+.3f} ± {half:.3f}{verdict}"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = columns(_suite(report))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.6))
    for ax, task in zip(axes, tasks):
        names = [n for n, s in report["rows"].items() if task in s]
        values = [report["rows"][n][task]["value"] for n in names]
        errors = [1.96 * (report["rows"][n][task]["stderr"] or 0) for n in names]
        ax.bar(names, values, yerr=errors, capsize=3, color="tab:blue")
        ax.set_title(HEADS[task], fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _weights(weights: dict[str, float]) -> str:
    return ", ".join(f"{m} {w:.3f}" for m, w in weights.items())

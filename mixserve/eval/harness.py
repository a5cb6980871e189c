"""`mixserve eval`: does the ensemble answer better than its members? lm-evaluation-harness drives the
served app over loopback HTTP as any external client would (its `local-completions` model type), on
the tasks of mixserve/eval/tasks.py.

Rows: each member alone, ME, CE and, when members tokenize differently, ME with token healing. The
generation task runs every row (plain text prompts: the server tokenizes). The scored tasks need
log-probs, which lm-eval asks for over token ids of one tokenizer: they run for each member and for
the ensemble when its members share a tokenizer; there ME and CE score the same numbers, since both
sample the mixture (router/logprobs.py). Then ME's sampled next token is checked against the mixture
(mixserve/eval/check.py). Writes eval.json, eval.md and eval.png (mixserve/eval/report.py).
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from mixserve.config import EnsembleConfig, load_config
from mixserve.eval.check import mixture_check
from mixserve.eval.report import mixed, write_report
from mixserve.eval.tasks import SUITES, write_tasks

SEED = 1234  # lm-eval's request seed: ME's member choices follow it
CHECK_PROMPT = "The capital of France is"


def rows(config: EnsembleConfig) -> dict[str, dict]:
    """Row name -> the model to ask for and the extra body fields for generation."""
    out = {m.name: {"model": m.name, "fields": {}} for m in config.members}
    if len(config.members) > 1:
        out["me"] = {"model": config.model_name, "fields": {"method": "me", "token_healing": False}}
        out["ce"] = {"model": config.model_name, "fields": {"method": "ce"}}
    if len(config.members) > 1 and config.gate is not None:
        # me and ce above follow the gate; these keep the config's fixed weights (generated tasks only:
        # the scored ones send lm-eval's own requests, which the gate weighs)
        for method in ("me", "ce"):
            out[f"{method} fixed"] = {"model": config.model_name,
                                      "fields": {**out[method]["fields"], "weights": dict(config.weights)}}
    return out


def run_eval(config_path: str, out: str | Path = "eval-out", limit: int | None = None, address: str | None = None,
             n: int = 100, check_samples: int = 2000, weights: dict[str, float] | None = None,
             suite: str = "default", concurrent: int = 1, only: list[str] | None = None) -> dict:
    """`only`: run just these rows and carry the others from the eval.json already in `out` (same
    config, suite and questions; carried(): after a refit changes the gate, the members' rows have
    nothing new to say). eval.json is written as each row finishes ("partial": true until the end),
    so a run cut short can be finished with `only` naming the rows it lacks."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from mixserve.actors.loading import model_dir
    from mixserve.cluster.ray_cluster import connect
    from mixserve.serving.served import served

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    config = load_config(config_path, weights)
    tasks_of = SUITES[suite]
    out = Path(out)
    tasks = TaskManager(include_path=str(write_tasks(out / "tasks", n)), include_defaults=False)
    tokenizers = {m.name: str(model_dir(replace(m.source, adapter=None))) for m in config.members}  # an adapter's is its base's
    plan = rows(config)
    same = {"config": str(config_path), "suite": suite, "limit": limit, "examples_per_task": n}
    results = carried(out, plan, only, same, config.weights) if only else {}
    connect(address)
    with served(config) as url:
        fingerprints = _member_tokenizers(url)
        if len(set(fingerprints.values())) > 1:
            plan["me+healing"] = {"model": config.model_name, "fields": {"method": "me", "token_healing": True}}
        for name, row in plan.items():
            if name in results:
                continue
            base = {"base_url": f"{url}/v1/completions", "model": row["model"], "num_concurrent": concurrent,
                    "max_retries": 1, "timeout": 600}
            results[name] = _scores(lm_eval.simple_evaluate(
                model="local-completions", model_args={**base, "tokenizer_backend": None, "tokenized_requests": False},
                tasks=list(tasks_of.generate), task_manager=tasks, gen_kwargs=row["fields"] or None, limit=limit,
                log_samples=True, random_seed=SEED))
            members = [row["model"]] if row["model"] in tokenizers else list(tokenizers)  # whose log-probs
            if len({fingerprints[m] for m in members}) == 1 and "weights" not in row["fields"]:
                results[name].update(_scores(lm_eval.simple_evaluate(
                    model="local-completions", model_args={**base, "tokenizer_backend": "huggingface",
                                                           "tokenizer": tokenizers[members[0]]},
                    tasks=list(tasks_of.score), task_manager=tasks, limit=limit, log_samples=True, random_seed=SEED)))
            for key, parts in tasks_of.mixed.items():
                if (score := mixed(results[name], parts)) is not None:
                    results[name][key] = score
            # Each row as it finishes: a run cut short keeps its rows, and `--rows` carries them
            out.mkdir(parents=True, exist_ok=True)
            (out / "eval.json").write_text(json.dumps({**same, "rows": results, "weights": config.weights,
                                                       "partial": True}, indent=2))
        one_tokenizer = len({fingerprints[m] for m in config.weights}) == 1
        weights = None if config.gate is not None else config.weights  # the gate's, as the server picks them
        check = mixture_check(url, config.model_name, weights, CHECK_PROMPT, one_tokenizer, check_samples) \
            if len(config.members) > 1 else None
    report = {**same, "rows": {name: results[name] for name in plan}, "weights": config.weights, "mixture_check": check}
    if only:
        report["carried"] = [name for name in plan if name not in only]
    write_report(report, out)
    return report


def carried(out: Path, plan: dict, only: list[str], same: dict, weights: dict[str, float]) -> dict[str, dict]:
    """The rows not in `only`, from the eval.json in `out`, refused (named) where that run asked
    other questions of another config, lacks a row, or ran a fixed-weights row with other weights."""
    if unknown := [name for name in only if name not in plan]:
        raise ValueError(f"--rows: no row {', '.join(unknown)}; this config's rows are {', '.join(plan)}")
    path = out / "eval.json"
    if not path.is_file():
        raise ValueError(f"--rows runs some rows and carries the rest from an earlier run, but {str(path)!r} "
                         "does not exist: run every row once first")
    before = json.loads(path.read_text())
    if differ := [f"{k} {before.get(k)!r} there, {v!r} here" for k, v in same.items() if before.get(k) != v]:
        raise ValueError(f"--rows: {path} is another run's ({'; '.join(differ)}): its rows answered other "
                         "questions; run every row")
    if missing := [name for name in plan if name not in only and name not in before["rows"]]:
        raise ValueError(f"--rows: {path} has no row {', '.join(missing)} to carry; run it too")
    if before.get("weights") != weights and (stale := [n for n in plan if n not in only and "weights" in plan[n]["fields"]]):
        raise ValueError(f"--rows: {path}'s rows {', '.join(stale)} ran with the weights {before.get('weights')}, the "
                         f"config now has {weights}: run them too")
    return {name: before["rows"][name] for name in plan if name not in only}


def _member_tokenizers(url: str) -> dict[str, str]:
    import requests

    return {m["id"]: m["tokenizer"] for m in requests.get(f"{url}/v1/models", timeout=30).json()["data"]
            if "tokenizer" in m}


def _scores(evaluated: dict) -> dict[str, dict]:
    """task -> {metric, value, stderr, n, and per_doc for accuracies} from lm-eval's results. per_doc
    (each question's score, by doc id) is what the report's paired differences are computed from."""
    out = {}
    for task, metrics in evaluated["results"].items():
        for key, value in metrics.items():
            metric, _, flt = key.partition(",")
            if metric in ("exact_match", "acc", "bits_per_byte"):
                stderr = metrics.get(f"{metric}_stderr,{flt}")
                out[task] = {"metric": metric, "value": value, "n": evaluated["n-samples"][task]["effective"],
                             "stderr": stderr if isinstance(stderr, (int, float)) else None}
                samples = [s for s in evaluated.get("samples", {}).get(task, []) if s.get("filter", flt) == flt]
                if metric != "bits_per_byte" and samples:  # bits per byte is a ratio of sums, not a mean
                    out[task]["per_doc"] = [float(s[metric]) for s in sorted(samples, key=lambda s: s["doc_id"])]
    return out

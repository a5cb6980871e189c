"""`mixserve bench`: ME against its baselines on the same members and prompts, in one run.

Methods: `single:<member>` for each member (its step time t_i), `ce-parallel` (every member every
step, in parallel, explicit mixture), `ce-sequential` (every member one after another in this
process: the baseline the paper quotes its speedup against), `me`, and `me-http` (ME through the
served app, OpenAI streaming over loopback: mixserve/bench/http.py). With vLLM installed the same
members run again on `engine: vllm` (rows `vllm single:<member>`, `vllm ce-parallel`, `vllm me`), in
the same sitting, so both engines' rows compare. Per method: ms per token
(median and p99 of the gaps between streamed tokens at batch 1), time to first token, tokens/s at
each concurrency, member forwards and router round trips per token; then the floor sum(lambda_i t_i)
and ME's ratios. Writes bench.json, bench.md and bench.png (mixserve/bench/report.py).
"""
from __future__ import annotations

import asyncio
import platform
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from mixserve.engines import DEFAULT, ENGINES
from mixserve.config import EnsembleConfig, MemberConfig, load_config
from mixserve.bench.clock import Clock, Run
from mixserve.bench.hop import bare_hops
from mixserve.bench.switch import breakdown
from mixserve.bench.http import measure_http
from mixserve.serving.served import served
from mixserve.router.request import GenerateRequest, RequestError
from mixserve.router.result import GenerateResult
from mixserve.router.session_log import Chunk


@dataclass
class MethodResult:
    name: str
    runs: int = 0
    tokens: int = 0
    ms_per_token_median: float | None = None
    ms_per_token_p99: float | None = None
    # (time after the first token) / (tokens after it): what a client waits per token on average. ME's
    # gaps are bimodal (a step inside a run, a step plus a switch at its end), so its median hides the
    # switches; ratios and the switch cost come from the means.
    ms_per_token_mean: float | None = None
    switches_per_token: float | None = None
    ttft_s_median: float | None = None
    forwards_per_token: float | None = None
    trips_per_token: float | None = None
    tokens_per_s: dict[int, float] = field(default_factory=dict)  # concurrency -> throughput
    skipped: str | None = None


async def measure(router, req: GenerateRequest) -> Run:
    clock, result = Clock(), None
    async with aclosing(router.stream(req)) as items:
        async for item in items:
            if isinstance(item, Chunk) and item.token_ids:
                clock.arrived(len(item.token_ids))
            elif isinstance(item, GenerateResult):
                result = item
    u = result.usage
    switches = sum(a != b for c in result.choices for a, b in zip(c.members, c.members[1:]))
    return clock.run(u.completion_tokens, u.member_forward_calls, u.router_round_trips, switches)


async def wave(measure_one, requests: list[GenerateRequest], concurrency: int, tick) -> tuple[list[Run], float]:
    """Every request through `measure_one(req) -> Run`, `concurrency` at a time; the wall time of the wave."""
    queue = list(reversed(requests))
    runs: list[Run] = []

    async def worker():
        while queue:
            runs.append(await measure_one(queue.pop()))
            tick()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return runs, time.perf_counter() - started


def prompt_text(tokens: int, seed: int) -> str:
    from mixserve.models.tiny import WORDS

    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(tokens))  # about one token per word


def row(engine: str, method: str) -> str:
    """A row's name: the default engine's rows bare, another engine's after its name ("vllm me")."""
    return method if engine == DEFAULT else f"{engine} {method}"


def default_engines() -> tuple[str, ...]:
    """The installed engines that run a model (engine sim only when asked: it measures the routers)."""
    return tuple(name for name, engine in ENGINES.items() if engine.installed() and engine.runs_model)


def methods(config: EnsembleConfig, engines=(DEFAULT,)) -> dict[str, dict]:
    """Row name -> request fields, plus which runner serves it ('ray', 'local' or 'http') and on which
    member engine."""
    out = {}
    for engine in engines:
        for m in config.members:
            out[row(engine, f"single:{m.name}")] = {"method": "single", "member": m.name, "runner": "ray",
                                                    "engine": engine}
        out[row(engine, "ce-parallel")] = {"method": "ce", "runner": "ray", "engine": engine}
        if ENGINES[engine].core is not None:  # in this process: the engines that have a core for it
            out[row(engine, "ce-sequential")] = {"method": "ce", "runner": "local", "engine": engine}
        out[row(engine, "me")] = {"method": "me", "runner": "ray", "engine": engine}
        # the same members with every step a Ray task (data_plane: ray): the data plane's gain, same sitting
        out[row(engine, "me-ray-calls")] = {"method": "me", "runner": "ray-calls", "engine": engine}
        if engine == DEFAULT:  # the served app's members run the default engine
            out["me-http"] = {"method": "me", "runner": "http", "engine": engine}
    return out


def on_engine(config: EnsembleConfig, engine: str) -> EnsembleConfig:
    """The same members on another engine, without what only their own engine takes."""
    defaults = {f.name: f.default for f in fields(MemberConfig)}
    others = {key: defaults[key] for e in ENGINES.values() for key in e.keys if key not in ENGINES[engine].keys}
    members = tuple(m if m.engine == engine else replace(m, engine=engine, engine_options={}, **others)
                    for m in config.members)
    return replace(config, members=members)


def run_bench(config_path: str, prompt_tokens: int = 64, max_tokens: int = 128, concurrency=(1, 4, 16),
              repeats: int = 5, rounds: int = 1, out: str | Path = "bench-out", address: str | None = None,
              progress: bool = True, engines: tuple[str, ...] | None = None) -> dict:
    from tqdm import tqdm

    from mixserve.serving.ensemble import build_ensemble

    from .report import write_report

    config = load_config(config_path)
    engines = engines or default_engines()
    plan = methods(config, engines)
    waves = {c: repeats if c == 1 else c * rounds for c in concurrency}
    bar = tqdm(total=len(plan) * sum(waves.values()), unit="req", disable=not progress, desc="bench")
    results: dict[str, MethodResult] = {}

    def run(name: str, measure_one) -> None:
        fields = {k: v for k, v in plan[name].items() if k not in ("runner", "engine")}
        bar.set_postfix_str(name)
        results[name] = asyncio.run(_one_method(measure_one, name, fields, prompt_tokens, max_tokens, waves,
                                                lambda: bar.update(1)))

    switches: dict[str, dict | None] = {}
    try:
        hops = None
        for engine in engines:  # one engine's members at a time: they share the CPUs
            on = on_engine(config, engine)
            runners = {"ray": build_ensemble(on, address=address)}
            try:
                if ENGINES[engine].core is not None:
                    runners["local"] = build_ensemble(on, in_process=True)
                hops = hops or bare_hops()  # Ray is up now; the members idle
                for name in plan:
                    if plan[name]["engine"] == engine and (runner := plan[name]["runner"]) != "http":
                        if runner == "ray-calls" and runner not in runners:  # last: its members take the CPUs
                            runners.pop("ray").close()
                            runners[runner] = build_ensemble(replace(on, data_plane="ray"), address=address)
                        run(name, lambda req, router=runners[runner].router: measure(router, req))
                        if plan[name]["method"] == "me" and runner == "ray":
                            switches[engine] = asyncio.run(breakdown(
                                runners[runner], [GenerateRequest(prompt=prompt_text(prompt_tokens, i),
                                                                  max_tokens=max_tokens, seed=i, method="me")
                                                  for i in range(3)],
                                lambda req, router=runners[runner].router: measure(router, req)))
            finally:
                for runner in runners.values():
                    runner.close()  # frees the members' CPUs for the next engine's and the served app's
        if "me-http" in plan:  # the default engine's members, served: not when --engines leaves it out
            with served(on_engine(config, DEFAULT)) as url, ThreadPoolExecutor(max(concurrency)) as pool:
                def over_http(req):
                    return asyncio.get_running_loop().run_in_executor(pool, measure_http, url, config.model_name, req)
                run("me-http", over_http)
    finally:
        bar.close()
    results = {name: results[name] for name in plan if name in results}  # the plan's order, not the run's
    report = summarize(config, results, dict(prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                                             concurrency=list(concurrency), repeats=repeats, rounds=rounds,
                                             engines=list(engines)), hops, switches)
    write_report(report, Path(out))
    return report


async def _one_method(measure_one, name: str, fields: dict, prompt_tokens: int, max_tokens: int,
                      waves: dict[int, int], tick) -> MethodResult:
    def request(i: int, tokens: int = max_tokens) -> GenerateRequest:
        return GenerateRequest(prompt=prompt_text(prompt_tokens, i), max_tokens=tokens, seed=i, **fields)

    result = MethodResult(name)
    try:
        await measure_one(request(10_000, 4))  # warm-up: first forwards, actor and torch start-up
    except RequestError as e:
        result.skipped = str(e)
        return result
    for c, count in waves.items():
        runs, wall = await wave(measure_one, [request(i) for i in range(count)], c, tick)
        result.tokens_per_s[c] = sum(r.tokens for r in runs) / wall
        if c == 1:
            gaps = sorted(g for r in runs for g in r.gaps_ms)
            tokens = sum(r.tokens for r in runs)
            result.runs, result.tokens = len(runs), tokens
            result.ms_per_token_median = statistics.median(gaps) if gaps else None
            result.ms_per_token_p99 = gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))] if gaps else None
            after_first = sum(r.tokens - 1 for r in runs)
            result.ms_per_token_mean = 1000 * sum(r.total_s - r.first_token_s for r in runs) / after_first \
                if after_first > 0 else None
            if all(r.switches is not None for r in runs):
                result.switches_per_token = sum(r.switches for r in runs) / max(1, tokens)
            result.ttft_s_median = statistics.median(r.first_token_s for r in runs)
            result.forwards_per_token = sum(r.forwards for r in runs) / max(1, tokens)
            result.trips_per_token = sum(r.trips for r in runs) / max(1, tokens)
    return result


def summarize(config: EnsembleConfig, results: dict[str, MethodResult], settings: dict,
              hops: dict[str, float] | None = None, switches: dict[str, dict | None] | None = None) -> dict:
    """ME's ratios on each engine, from mean ms per token (MethodResult.ms_per_token_mean): the floor
    sum(lambda_i t_i), ME over it, what one switch between members costs, and the baselines."""
    weights = config.weights
    top = max(settings["concurrency"])

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    def mean(name: str) -> float | None:
        return results[name].ms_per_token_mean if name in results else None

    def engine_ratios(engine: str) -> dict:
        t = {m: mean(row(engine, f"single:{m}")) for m in weights}
        floor = sum(weights[m] * t[m] for m in weights) if all(t.values()) else None
        me = results[row(engine, "me")]
        slower = me.ms_per_token_mean - floor if me.ms_per_token_mean and floor else None
        par = row(engine, "ce-parallel")
        out = {
            "floor_ms": floor,
            "me_over_floor": ratio(me.ms_per_token_mean, floor),
            # what ME pays per switch over its floor: (ME - floor) / switches per token
            "switch_ms": slower / me.switches_per_token if slower is not None and me.switches_per_token else None,
            "me_switches_per_token": me.switches_per_token,
            "me_speedup_over_ce_parallel": ratio(mean(par), me.ms_per_token_mean),
            f"me_throughput_over_ce_parallel_at_{top}": ratio(me.tokens_per_s.get(top),
                                                              results[par].tokens_per_s.get(top)),
            "me_ray_calls_over_me": ratio(mean(row(engine, "me-ray-calls")), me.ms_per_token_mean),
        }
        if row(engine, "ce-sequential") in results:
            out["me_speedup_over_ce_sequential"] = ratio(mean(row(engine, "ce-sequential")), me.ms_per_token_mean)
        return out

    ratios = {"me_trips_per_token_theory": 1 - sum(w * w for w in weights.values())}
    if "me" in results:  # the default engine's rows, unless --engines left it out
        ratios.update(engine_ratios(DEFAULT), me_http_over_me=ratio(mean("me-http"), mean("me")))
    for engine in ENGINES:
        if engine != DEFAULT and row(engine, "me") in results:
            more = engine_ratios(engine)
            ratios.update({f"{engine}_{k}": v for k, v in more.items()})
            ratios[f"{engine}_single_over_{DEFAULT}"] = {m: ratio(mean(row(engine, f"single:{m}")), mean(f"single:{m}"))
                                                        for m in weights}
            ratios[f"{engine}_me_throughput_over_{DEFAULT}_me_at_{top}"] = ratio(
                results[row(engine, "me")].tokens_per_s.get(top), results["me"].tokens_per_s.get(top) if "me" in results else None)
    return {"settings": settings, "hardware": hardware(), "weights": weights, "hops": hops or {},
            "switch_breakdown": switches or {},
            "methods": {k: asdict(v) for k, v in results.items()}, "ratios": ratios}


def hardware() -> dict:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cpus": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
            "simulation": None if gpu else "one CPU and one torch thread per member stands in for one accelerator"}

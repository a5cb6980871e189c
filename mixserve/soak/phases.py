"""`mixserve soak`: serve a config on loopback, drive a mixed load while faults land, then check every
answer against a quiet server and count what leaked (docs/architecture.md invariants 1, 3, 6, 7).

Phases: warm-up (one request of each kind, then the load, no faults), the soak (the load with member kills,
pauses and router-replica kills on their own seeded timelines, and clients that drop streams), the
drain (the server back, every session freed), the quiet replay of every answered request, the
named sessions' last continuation, then the oracle (mixserve/soak/oracle.py) and the report.
"""
from __future__ import annotations

import asyncio
import os
from collections import Counter
import socket
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import aiohttp

from mixserve.config import EnsembleConfig

from .availability import availability
from .faults import Injector
from .memory import MemoryWatch
from .load import Client, Mix, Outcome, clock_from, drive
from .oracle import Oracle, Setup
from .prometheus import agreement, settled
from .report import write_report
from .topology import served_config

QUIET_TRIES = 20  # a quiet replay refused with 429 (another replay's sessions) is sent again


def run_soak(config_path: str, out: str, duration_s: float = 600, seed: int = 0, warmup_s: float = 30,
             member_kills: int | None = None, pauses: int | None = None, router_kills: int | None = None,
             workers: int | None = None, hostile: float = 0.0, topology: str = "single",
             require_availability: bool | None = None) -> dict:
    """Serve `config_path` in a fresh local Ray on free loopback ports and soak it; returns the report
    (also written to `out`). Fault counts default to the duration's share of 18 kills, 6 pauses and 2
    router kills per 10 minutes; `hostile` is the share of requests a hostile client sends
    (mixserve/soak/hostile.py); `topology` the copies served (mixserve/soak/topology.py);
    `require_availability` whether missing the availability targets fails the soak (default: with the
    scaled topology)."""
    config = served_config(config_path, topology)
    # Prometheus counters are compared with what the clients saw: Ray exports them every second.
    os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")
    from mixserve.cluster.ray_cluster import connect

    metrics_port = free_port()
    connect(metrics_port=metrics_port)
    from ray import serve

    from mixserve.serving.app import build_app

    http_port, grpc_port = free_port(), free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    started = time.monotonic()
    serve.run(build_app(config, "127.0.0.1", grpc_port), name="mixserve", route_prefix="/")
    load_s = time.monotonic() - started
    share = duration_s / 600
    plan = {"member_kill": round(18 * share) if member_kills is None else member_kills,
            "pause": max(1, round(6 * share)) if pauses is None else pauses,
            "router_kill": round(2 * share) if router_kills is None else router_kills}
    soak = Soak(config, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", metrics_port, seed, hostile,
                topology == "scaled" if require_availability is None else require_availability)
    # About twice max_concurrent_sessions offered: a request asks for 1.6 sessions on average (n).
    workers = workers or max(1, round(2 * config.max_concurrent_sessions / 1.6))
    report = asyncio.run(soak.run(duration_s, warmup_s, plan, workers))
    report["settings"].update(config=str(config_path), topology=topology, load_s=round(load_s, 1),
                              phases=soak.phases)
    write_report(report, soak.outcomes, soak.faults, Path(out))
    (Path(out) / "metrics.txt").write_text(soak.metrics_text)  # the last scrape, as Prometheus saw it
    serve.delete("mixserve")
    return report


class Soak:
    def __init__(self, config: EnsembleConfig, http: str, grpc: str, metrics_port: int, seed: int,
                 hostile: float = 0.0, require_availability: bool = False):
        self.config = config
        self.require_availability = require_availability  # missing the availability targets fails the soak
        self.http = http
        self.grpc = grpc
        self.metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        self.seed = seed
        self.hostile = hostile
        self.clock = clock_from(time.monotonic())
        self.retry_s = config.member_retry_s
        self.members = [m.name for m in config.members]
        self.client: Client | None = None  # made in run(): aiohttp binds to the running loop
        self.outcomes: list[Outcome] = []
        self.metrics_text = ""
        self.phases: dict[str, float] = {}  # seconds each phase took
        self.faults = []

    async def run(self, duration_s: float, warmup_s: float, plan: dict, workers: int) -> dict:
        # A request may wait out a member's retry bound and a router replica's restart, not more.
        self.client = Client(self.http, self.grpc, self.config.model_name, self.clock, timeout_s=3 * self.retry_s + 120,
                             members=self.members)
        try:
            return await self._run(duration_s, warmup_s, plan, workers)
        finally:
            await self.client.close()

    async def _run(self, duration_s: float, warmup_s: float, plan: dict, workers: int) -> dict:
        setup = await self._setup()
        mix = Mix(self.seed, setup.members, self.config.model_name, hostile=self.hostile)
        limit = int(50 * (duration_s + warmup_s))  # a bound on requests, far above what 2 cores serve
        for spec in mix.primer():
            self.outcomes.append(out := await self.client.send(spec))
            mix.finished(out)
        start = self.clock()
        load = (start, start + warmup_s)  # the warm-up's load: the availability's reference
        await drive(self.client, mix, load[1], workers, self.outcomes, limit)
        await self._drained()
        warm_end = self.clock()

        begin, end = self.clock(), self.clock() + duration_s
        busy: set[str] = set()  # the members under a fault: one fault per pool at a time
        injectors = [Injector(self.clock, self.seed * 1000 + k, self.http, 300, self.members, busy) for k in range(3)]
        pause_s = (0.3 * self.retry_s, 1.6 * self.retry_s)  # some pauses past the retry bound, some not
        timelines = [
            injectors[0].run("member_kill", injectors[0].times(plan["member_kill"], begin + 2, end - 10)),
            injectors[1].run("pause", injectors[1].times(plan["pause"], begin + 2, end - 10 - pause_s[1]), pause_s),
            injectors[2].run("router_kill", injectors[2].times(plan["router_kill"], begin + 0.1 * duration_s,
                                                               begin + 0.6 * duration_s)),
        ]
        memory = MemoryWatch(self.clock, warmup_s, self.members)
        memory.sample()
        watch = asyncio.create_task(memory.run(end))
        await asyncio.gather(drive(self.client, mix, end, workers, self.outcomes, limit), *timelines)
        self.faults = sorted((f for i in injectors for f in i.faults), key=lambda f: f.start)
        phases = {"warmup_s": warm_end, "soak_s": self.clock() - begin}
        mark = self.clock()
        live = await self._drained()
        await watch
        memory.sample()  # after the drain: what the processes hold once their sessions are gone
        self.metrics_text = await settled(self.metrics)
        prometheus = agreement(self.metrics_text, self.outcomes, self.faults)
        phases["drain_s"], mark = self.clock() - mark, self.clock()
        quiet = await self._quiet()
        phases["quiet_s"], mark = self.clock() - mark, self.clock()
        sessions = await self._sessions(quiet)
        phases["sessions_s"] = self.clock() - mark
        self.phases = {k: round(v, 1) for k, v in phases.items()}
        oracle = Oracle(setup, self.outcomes, self.faults, quiet)
        verdicts = oracle.judge_all()
        done = [o.t1 for o in self.outcomes if o.status == 200]
        kills = [f.start for f in self.faults if f.kind == "router_kill"]
        served = availability(done, load, (begin, end), self.require_availability, kills)
        return _report(self, setup, plan, verdicts, oracle.problems, live, memory, prometheus, sessions,
                       served, warm_end, duration_s)

    async def _setup(self) -> Setup:
        async with aiohttp.ClientSession() as s, s.get(self.http + "/v1/models") as resp:
            cards = (await resp.json())["data"][1:]
        return Setup({c["id"]: c["tokenizer"] for c in cards}, {m.name: m.engine for m in self.config.members},
                     self.retry_s, self.config.max_concurrent_sessions)

    async def _drained(self, bound_s: float = 180) -> dict | None:
        """The server healthy and every member holding no session, within bound_s; the last answer."""
        deadline = self.clock() + bound_s
        body = None
        while self.clock() < deadline:
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, \
                        s.get(self.http + "/health") as resp:
                    body = await resp.json(content_type=None)
                    if resp.status == 200 and not any(body["live_sessions"].values()) \
                            and not body["active_sessions"] and not any(body.get("replicas_down", {}).values()):
                        return {**body["live_sessions"], "router": 0}
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                pass
            await asyncio.sleep(0.5)
        return body and {**body.get("live_sessions", {}), "router": body.get("active_sessions")}

    async def _quiet(self) -> dict[int, Outcome]:
        """Every answered or dropped request again, one at a time per worker, nothing else running."""
        todo = [o for o in self.outcomes if o.status in (200, "disconnected")]
        answers: dict[int, Outcome] = {}
        turns = _session_turns(self.outcomes)

        room = asyncio.Semaphore(self.config.max_concurrent_sessions)  # one unit per session (n)
        taking = asyncio.Lock()  # a replay takes all its units at once: no two half-served deadlock

        async def replay(o: Outcome) -> None:
            spec = o.spec
            async with taking:
                for _ in range(spec["n"]):
                    await room.acquire()
            try:
                if spec["session"]:
                    answers[spec["i"]] = await self._turn_reference(o, turns[spec["session"]])
                else:
                    answers[spec["i"]] = await self._send_quiet({**spec, "proto": "http", "stream": False,
                                                                 "disconnect_after": None})
            finally:
                for _ in range(spec["n"]):
                    room.release()

        async def worker() -> None:
            while todo:
                await replay(todo.pop())

        # As many replays at once as admission takes: a quiet server, yet not an idle one.
        await asyncio.gather(*(worker() for _ in range(self.config.max_concurrent_sessions)))
        return answers

    async def _send_quiet(self, spec: dict) -> Outcome:
        for k in range(QUIET_TRIES):
            out = await self.client.send(spec)
            if out.status != 429:
                return out
            await asyncio.sleep(0.05 * (k + 1))  # the server frees a finished replay's slots just after it answers
        return out

    async def _turn_reference(self, out: Outcome, turns: list[Outcome], extra: list[Outcome] = ()) -> Outcome:
        """A session's turn, quiet: the same turns replayed on a fresh session, this one last. (Across
        tokenizers a continued session is not one longer request: members rebuild their caches from
        the log's text in one pass, docs/deploy.md "Failures"; replaying the turns is the same request.)"""
        fresh = f"quiet-{uuid.uuid4().hex}"
        before = [t for t in turns if t.status == 200 and t.spec["i"] < out.spec["i"]] + list(extra)
        ref = None
        for k, turn in enumerate([*before, out]):
            ref = await self._send_quiet({**turn.spec, "proto": "http", "stream": False, "session": fresh,
                                          "disconnect_after": None, "prompt": turns[0].spec["prompt"] if k == 0 else None})
            if ref.status != 200:
                break
        return ref

    async def _sessions(self, quiet: dict[int, Outcome]) -> dict:
        """Every named session whose last turn ended at its length continues once more, correctly.
        A turn whose answer was lost (its router replica killed) may or may not have been stored:
        either continuation is right, and which one it was is counted. A session whose history is not
        the quiet server's (a turn's text changed with a crash, on an engine that allows it: the oracle
        judges that turn) has no replayable reference: its continuation must be answered, and is
        counted apart, not compared (the vLLM soak once called one such continuation wrong)."""
        checked, wrong, advanced, apart = 0, [], 0, 0
        for name, turns in _session_turns(self.outcomes).items():
            answered = [t for t in turns if t.status == 200]
            if not answered or answered[-1].finish != ["length"]:
                continue
            changed = any(quiet.get(t.spec["i"]) is None or quiet[t.spec["i"]].texts != t.texts for t in answered)
            last = answered[-1].spec
            more = {**last, "i": len(self.outcomes) + len(quiet) + checked + 1, "prompt": None, "proto": "http",
                    "stream": False, "max_tokens": 6, "disconnect_after": None, "continues": last["i"]}
            got = await self._send_quiet(more)
            checked += 1
            if changed and got.status == 200 and len(got.texts) == more["n"]:
                apart += 1
                continue
            ref = await self._turn_reference(got, turns)
            if got.status == 200 and ref.status == 200 and got.texts == ref.texts:
                continue
            lost = [t for t in turns if t.status not in (200, 429) and t.spec["i"] > last["i"]]
            if lost and got.status == 200:
                ref = await self._turn_reference(got, turns, extra=lost)
                if ref.status == 200 and got.texts == ref.texts:
                    advanced += 1
                    continue
            wrong.append(f"session {name}: continued {got.status} {got.texts!r}, expected {ref.status} {ref.texts!r}")
        return {"checked": checked, "wrong": len(wrong), "advanced_by_a_lost_turn": advanced,
                "after_a_changed_turn": apart, "problems": wrong}

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session_turns(outcomes: list[Outcome]) -> dict[str, list[Outcome]]:
    turns: dict[str, list[Outcome]] = {}
    for o in sorted(outcomes, key=lambda o: o.spec["i"]):
        if o.spec["session"]:
            turns.setdefault(o.spec["session"], []).append(o)
    return turns


def _report(soak: Soak, setup: Setup, plan: dict, verdicts, problems, live, watch: MemoryWatch, prometheus,
            sessions, served: dict, warm_end: float, duration_s: float) -> dict:
    faults = Counter(f.kind for f in soak.faults)
    memory, roles = watch.growth(), watch.roles()
    growth = max((m["growth"] for m in memory + roles), default=0.0)
    statuses = Counter(str(o.status) for o in soak.outcomes)
    disconnects = sum(o.status == "disconnected" for o in soak.outcomes)
    leaked = live is None or any(live.values())
    unrecovered = [f"{f.kind} of {f.target} at {f.start:.1f} s" for f in soak.faults if f.end is None]
    summary = {
        "requests": len(soak.outcomes), "statuses": dict(statuses), "verdicts": dict(verdicts),
        "faults": {**{k: faults.get(k, 0) for k in plan}, "disconnect": disconnects}, "planned": plan,
        "wrong_texts": verdicts.get("wrong_text", 0) + sessions["wrong"], "unexplained": verdicts.get("unexplained", 0),
        "router_lost": verdicts.get("router_lost", 0), "changed_after_crash": verdicts.get("changed_after_crash", 0),
        "after_a_changed_turn": verdicts.get("after_a_changed_turn", 0),
        "leaked_sessions": live, "memory_growth_max": growth, "memory": memory, "memory_roles": roles,
        "sessions": sessions, "prometheus": prometheus, "unrecovered": unrecovered, "availability": served,
    }
    summary["passed"] = (summary["wrong_texts"] == 0 and summary["unexplained"] == 0 and not leaked
                         and growth < 0.10 and bool(roles) and prometheus["agree"] and not unrecovered
                         and (served["met"] or not served["required"]))
    return {"summary": summary, "problems": problems[:50] + sessions["problems"][:20],
            "settings": {"seed": soak.seed, "duration_s": duration_s, "warmup_end_s": round(warm_end, 1),
                         "retry_s": soak.retry_s, "max_concurrent_sessions": setup.max_sessions,
                         "engines": setup.engines},
            "faults": [asdict(f) for f in soak.faults], "memory_series": watch.series()}


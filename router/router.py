"""The router: runs each session's turns against the members (docs/architecture.md, "router").

Per turn: the policy names who computes; each named member gets only its unseen delta; new tokens
go into the log. This file is the turn loop, `_sample` its driver; the calls to members with their
bounds and retries are router/calls.py's, the prompt side (tokenizing, resuming, vocabularies)
router/prompts.py's.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import msgspec
import numpy as np
import torch

from mixserve.actors.messages import MemberInfo, StepRequest, StepResult
from mixserve.actors.sampling import pick_mixture
from mixserve.config import EnsembleConfig

from .calls import MemberCalls
from .clients import LocalMember, MemberClient
from .policies import Policy, Turn, make_policy
from .prompts import Prompts
from .request import GenerateRequest, Plan, check_context, validate
from .result import Choice, GenerateResult, final, summarize
from .session_log import MIXTURE, Chunk, Session
from .snapshot import SessionStore

if TYPE_CHECKING:
    from .dataplane import OpenRun

MAX_PARALLEL = 64  # sessions of one request (its n samples) in flight at once


@dataclass
class Ahead:
    """A session's next run, opened on its member during the run before it."""

    member: str
    run: OpenRun


@dataclass
class Sampling:
    """One session being sampled: what each of its turns needs besides the turn itself."""

    plan: Plan
    session: Session
    policy: Policy
    stats: Counter  # the request's forwards and router -> member trips
    emit: Callable[[], None]  # streams what is new in the session's text


class Router:
    def __init__(self, config: EnsembleConfig, members: dict[str, MemberClient], infos: dict[str, MemberInfo],
                 metrics=None, store=None):
        self.config = config  # the defaults a request may override, the scheduling and the retry bound
        self.members = members  # name -> a MemberClient (router/clients.py)
        self.infos = infos
        self.metrics = metrics  # mixserve/serving/metrics.py in a server; None in the CLI and tests
        self.calls = MemberCalls(members, config.member_retry_s, metrics)
        self.prompts = Prompts(infos, self.calls, store or LocalMember(SessionStore()))
        # `mixserve bench` sets a deque here: per switch, (session, first step, member, the run before's
        # last token in, this run's call sent, its first token in), wall clock (mixserve/bench/switch.py)
        self.trace = None

    def validate(self, req: GenerateRequest) -> Plan:
        """The request checked against the config and the members' infos, the one time it is checked
        (router/request.py's validate)."""
        c = self.config
        return validate(req, self.infos, c.weights, c.method, c.default_member, c.gate, model_name=c.model_name,
                        infos=self.infos)

    async def generate(self, req: GenerateRequest | Plan) -> GenerateResult:
        return await final(self.stream(req))

    async def stream(self, req: GenerateRequest | Plan) -> AsyncIterator[Chunk | GenerateResult]:
        """Chunks of every choice as their turns complete, then the whole GenerateResult. A request is
        checked first (`validate`); a Plan, which the ingress has checked, runs as it is. Closing the
        iterator early (a client went away) cancels the sessions and frees them on every member."""
        plan = req if isinstance(req, Plan) else self.validate(req)
        started = time.perf_counter()
        prompt_ids, history, held = await self.prompts.resume(plan) if plan.session else (None, [], None)
        prompt_ids = prompt_ids or await self.prompts.ids(plan)
        check_context(plan, prompt_ids, len(history), self.infos)  # before any member works
        tokenizers = {m: self.infos[m].tokenizer for m in plan.weights}
        if plan.method == "ce":
            tokenizers[MIXTURE] = (await self.prompts.vocab(plan)).fingerprint
        stats: Counter = Counter()
        events: asyncio.Queue = asyncio.Queue()
        in_flight = asyncio.Semaphore(MAX_PARALLEL)  # n can be large: bound what waits at the members

        async def sample(j: int) -> None:
            try:
                async with in_flight:
                    params = msgspec.structs.replace(plan.params, seed=plan.params.seed + j)
                    s = Session(prompt_ids, tokenizers, self.prompts.eos_ids, params, index=j, history=history)
                    self._hold(s, held)
                    choice = await self._sample(plan, s, stats, lambda: events.put_nowait(s.take_chunk()))
                    if plan.logprobs is not None:
                        choice = replace(choice, logprobs=await self.prompts.score(plan, prompt_ids, choice))
                    if plan.session:
                        await self.prompts.save(plan, prompt_ids, s.log, s.held)
                events.put_nowait(choice)
            except Exception as e:  # noqa: BLE001 - handed to the consumer, which raises it
                events.put_nowait(e)

        tasks = [asyncio.create_task(sample(j)) for j in range(plan.n)]
        choices: list[Choice] = []
        try:
            while len(choices) < plan.n:
                event = await events.get()
                if isinstance(event, Exception):
                    raise event
                if isinstance(event, Choice):
                    choices.append(event)
                else:
                    yield event
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        choices.sort(key=lambda c: c.index)
        usage = summarize(choices, prompt_ids, stats["forwards"], stats["trips"])
        total = time.perf_counter() - started
        timing = {"total_s": total, "ms_per_token": 1000 * total / max(1, usage.completion_tokens),
                  "first_token_s": min((c.first_token_s or total) for c in choices)}
        prompt_text = await self.prompts.text(plan) if plan.echo else None
        yield GenerateResult(plan.method, plan.params.seed, choices, prompt_ids, usage, timing, prompt_text,
                             dict(plan.weights))

    async def _sample(self, plan: Plan, s: Session, stats: Counter, emit: Callable[[], None]) -> Choice:
        policy = make_policy(plan.method, plan.weights, plan.member, s.params.seed,
                             self.config.run_length_scheduling)
        job = Sampling(plan, s, policy, stats, emit)
        ahead: Ahead | None = None  # the next turn's run, opened on its member while this one decodes
        keep = False  # a named session that can go on: its members hold its KV for the next turn
        try:
            while s.finish_reason is None:
                turn = policy.turn(s.step, s.remaining)
                if turn.weights:
                    await self._mix(job, turn)
                    emit()
                else:
                    opened, ahead = ahead, None
                    ahead = self._open_next(job, turn.members[0], s.step + turn.steps)
                    await self._run(job, turn, opened, ahead)
            # Only a run that ended at max_tokens leaves each member's log where the router's is.
            keep = plan.session is not None and s.finish_reason == "length"
        finally:
            if ahead is not None:
                ahead.run.cancel()  # the text ended before its turn
            where = {m: getattr(self.members[m], "where", lambda _: None)(s.id) for m in s.cursor}
            kept = await self.calls.release(s, keep)
            s.held = {"session": s.id, "members": {m: [where[m], s.cursor[m]] for m in kept}}
        return Choice(s.output_text(), [e.token for e in s.output()], [e.member for e in s.output()],
                      s.finish_reason, s.first_token_s, s.stretches(), s.index)

    def _hold(self, s: Session, held: dict | None) -> None:
        """A named session's next turn goes on where its members hold its KV (router/pools.py): the
        same member session, on the same replicas, each sent only what it has not seen."""
        if not held:
            return
        s.id = held["session"]
        for m, (replica, cursor) in held["members"].items():
            if m in s.tokenizers and cursor <= len(s.log):
                s.cursor[m] = cursor
                if replica is not None and hasattr(self.members[m], "pin"):
                    self.members[m].pin(s.id, replica)

    def _heals(self, plan: Plan, member: str) -> bool:
        """Token healing for this member's runs. A healed token's id spans text another member wrote,
        so only a member whose tokenizer no other member shares heals (they would be sent that id)."""
        heal = self.config.token_healing if plan.token_healing is None else plan.token_healing
        return heal and all(self.infos[m].tokenizer != self.infos[member].tokenizer for m in plan.weights if m != member)

    def _open_next(self, job: Sampling, member: str, end: int) -> Ahead | None:
        """Open the run after this one on its member now (docs/architecture.md, "The next run in
        flight"): the schedule is known ahead (invariant 5), so the next member catches up on what it
        lacks (on its first turn, the prompt) while this one decodes, and its run waits only for this
        run's tokens. None where there is no next run, it is this member's or a mixture's, or the
        member cannot open one now."""
        s = job.session
        if not self.config.next_run_ahead or end >= s.step + s.remaining:
            return None
        turn = job.policy.turn(end, s.step + s.remaining - end)
        nxt = turn.members[0]
        if turn.weights or nxt == member or not self.members[nxt].can_open(s.id):
            return None
        fresh = nxt not in s.cursor
        delta = s.take_delta(nxt) if self._feedable(s, nxt) else ()
        req = StepRequest(s.id, delta, end, turn.steps, s.params, fresh=fresh and bool(delta),
                          heal=self._heals(job.plan, nxt))
        return Ahead(nxt, self.members[nxt].open(req))

    def _feedable(self, s: Session, member: str) -> bool:
        """Whether the log it has not seen can go to `member` now. Text from another tokenizer waits
        for the turn: re-tokenized in pieces it could split differently from all at once, and
        the text must not depend on when it was sent (invariant 3)."""
        return all(e.tokenizer == s.tokenizers[member] for e in s.log[s.cursor.get(member, 0):])

    def _feed(self, s: Session, ahead: Ahead) -> None:
        if self._feedable(s, ahead.member) and ahead.member in s.cursor:
            delta = s.take_delta(ahead.member)
            if delta:
                ahead.run.feed(delta, False)

    async def _run(self, job: Sampling, turn: Turn, opened: Ahead | None, ahead: Ahead | None) -> None:
        """The turn's member catches up on its delta and decodes its run of `turn.steps` steps, in one
        call whose tokens stream back as they are sampled. With eager_sync the idle members get those
        tokens as they come, and so does the run opened `ahead` on the next member; `opened` is this
        run, opened so during the turn before."""
        s, member = job.session, turn.members[0]
        idle = [m for m in job.plan.weights if m != member and not (ahead and ahead.member == m)] \
            if self.config.eager_sync else []
        heal = self._heals(job.plan, member)
        caught_up = s.step - s.cursor.get(member, 0)
        started = time.perf_counter()
        first_step, end = s.step, s.step + turn.steps
        prev_end, sent, first_in = s.run_ended, time.time(), None  # wall clock, for the switch trace

        def request(delta, fresh):
            return StepRequest(s.id, delta, s.step, end - s.step, s.params, fresh=fresh, heal=heal)

        async def record(part: StepResult) -> bool:
            nonlocal first_in
            first_in = first_in or time.time()
            s.record(member, part.tokens, part.pieces, part.finish)
            job.emit()
            if s.finish_reason is not None or s.step >= end:
                s.run_ended = time.time()
                return True
            self.calls.sync_idle(s, idle)
            if ahead is not None and self.config.eager_sync:
                self._feed(s, ahead)
            return False

        await self.calls.run(s, member, request, job.stats, record, opened.run if opened else None)
        if self.trace is not None and prev_end and first_in:
            self.trace.append((s.id, first_step, member, prev_end, sent, first_in))
        if self.metrics:
            self.metrics.run(member, time.perf_counter() - started, caught_up)

    async def _mix(self, job: Sampling, turn: Turn) -> None:
        """ce: every member's distribution, in parallel; sample from their weighted mixture."""
        s = job.session
        results = await asyncio.gather(*(self.calls.run(s, m, lambda delta, fresh: StepRequest(
            s.id, delta, s.step, 0, s.params, distribution=True, fresh=fresh), job.stats) for m in turn.members))
        if any(r.finish == "length" for r in results):  # a member's context is full: no row, the text ends
            s.record(MIXTURE, [], [], "length")
            return
        vocab = self.prompts.vocabs[frozenset(s.tokenizers[m] for m in turn.members)]
        # One copy per distribution: float64 (the mixture's precision), writable as torch wants.
        mixture = vocab.mix([(s.tokenizers[m], w, torch.from_numpy(r.probs.astype(np.float64)))
                             for m, w, r in zip(turn.members, turn.weights, results)])  # (vocab,)
        token = pick_mixture(mixture, s.params, s.step)
        s.record(MIXTURE, [token], [vocab.pieces[token]])

    async def live_sessions(self) -> dict[str, int]:
        counts = await asyncio.gather(*(m.live_sessions() for m in self.members.values()))
        return dict(zip(self.members, counts))

    async def census(self, timeout_s: float) -> dict[str, tuple[int, int, int]]:
        """Per member: (sessions held on its replicas that answered, replicas that did not answer
        within timeout_s, replicas). A member without a pool (one client) is one replica."""
        async def one(member) -> tuple[int, int, int]:
            if hasattr(member, "census"):
                return await member.census(timeout_s)
            try:
                return await asyncio.wait_for(member.live_sessions(), timeout_s), 0, 1
            except Exception:  # noqa: BLE001 - any failure to answer counts it as not answering
                return 0, 1, 1

        counts = await asyncio.gather(*(one(m) for m in self.members.values()))
        return dict(zip(self.members, counts))

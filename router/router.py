"""The router: runs each session's turns against the members (docs/architecture.md, "router").

Per turn: the policy names who computes; each named member gets only its unseen delta; new tokens
go into the log. One file, one loop: `_sample` is the whole state machine driver.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace

import numpy as np
import torch

from mixserve.actors.messages import MemberInfo, SessionLost, StepRequest, StepResult
from mixserve.actors.sampling import pick_mixture
from mixserve.config import EnsembleConfig

from . import logprobs, snapshot
from .members import CallCancelled, LocalMember, MemberClient, MemberDown
from .policies import make_policy
from .logprobs import LogProbs
from .request import (GenerateRequest, MemberFailedError, NotFoundError, Plan, RequestError, UnavailableError,
                      validate)
from .result import Choice, GenerateResult, final, summarize
from .session import MIXTURE, Chunk, Session
from .snapshot import SessionStore
from .vocab import EOS, SharedVocab, UnionVocab

log = logging.getLogger(__name__)
RELEASE_WAIT_S = 1.0  # how long a finished session waits for its members to confirm the release
MAX_PARALLEL = 64  # sessions of one request (its n samples) in flight at once


@dataclass
class Ahead:
    """A session's next run, opened on its member during the run before it."""

    member: str
    run: object  # router/dataplane.py's OpenRun


class Router:
    def __init__(self, config: EnsembleConfig, members: dict[str, MemberClient], infos: dict[str, MemberInfo],
                 metrics=None, store=None):
        self.config = config  # the defaults a request may override, the scheduling and the retry bound
        self.members = members  # name -> a MemberClient (router/members.py)
        self.infos = infos
        self.eos_ids: dict[str, frozenset[int]] = {}
        for info in infos.values():
            self.eos_ids[info.tokenizer] = self.eos_ids.get(info.tokenizer, frozenset()) | set(info.eos_ids)
        self.vocabs: dict[frozenset[str], SharedVocab | UnionVocab] = {}  # ce: members' tokenizers -> vocabulary
        self.metrics = metrics  # router/metrics.py in a server; None in the CLI and tests
        self.store = store or LocalMember(SessionStore())  # session snapshots, by id
        # `mixserve bench` sets a deque here: per switch, (session, first step, member, the run before's
        # last token in, this run's call sent, its first token in), wall clock (mixserve/bench_switch.py)
        self.trace = None
        self.syncs: dict[tuple[str, str], asyncio.Task] = {}  # (session, member) -> its background catch-up
        self.replays: Counter = Counter()  # member -> sessions replayed into it after it lost them (invariant 1)

    def plan(self, req: GenerateRequest) -> Plan:
        """The request checked against the config and the members' infos, the one time it is checked
        (router/request.py's validate)."""
        c = self.config
        return validate(req, self.infos, c.weights, c.method, c.default_member, c.gate, model_name=c.model_name,
                        infos=self.infos)

    async def generate(self, req: GenerateRequest | Plan) -> GenerateResult:
        return await final(self.stream(req))

    async def stream(self, req: GenerateRequest | Plan) -> AsyncIterator[Chunk | GenerateResult]:
        """Chunks of every choice as their turns complete, then the whole GenerateResult. A request is
        checked first (`plan`); a Plan, which the ingress has checked, runs as it is. Closing the
        iterator early (a client went away) cancels the sessions and frees them on every member."""
        plan = req if isinstance(req, Plan) else self.plan(req)
        started = time.perf_counter()
        prompt_ids, history = await self._resume(plan) if plan.session else (None, [])
        prompt_ids = prompt_ids or await self._prompt_ids(plan)
        tokenizers = {m: self.infos[m].tokenizer for m in plan.weights}
        if plan.method == "ce":
            tokenizers[MIXTURE] = (await self._vocab(plan)).fingerprint
        stats: Counter = Counter()
        events: asyncio.Queue = asyncio.Queue()
        gate = asyncio.Semaphore(MAX_PARALLEL)  # n can be large: bound what waits at the members

        async def sample(j: int) -> None:
            try:
                async with gate:
                    params = replace(plan.params, seed=plan.params.seed + j)
                    s = Session(prompt_ids, tokenizers, self.eos_ids, params, index=j, history=history)
                    choice = await self._sample(plan, s, stats, lambda: events.put_nowait(s.take_chunk()))
                    if plan.logprobs is not None:
                        choice = replace(choice, logprobs=await self._score(plan, prompt_ids, choice))
                    if plan.session:
                        await self.store.call("put", plan.session, snapshot.dump(prompt_ids, s.log))
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
        prompt_text = await self._prompt_text(plan) if plan.echo else None
        yield GenerateResult(plan.method, plan.params.seed, choices, prompt_ids, usage, timing, prompt_text,
                             dict(plan.weights))

    async def _sample(self, plan: Plan, s: Session, stats: Counter, emit) -> Choice:
        policy = make_policy(plan.method, plan.weights, plan.member, s.params.seed,
                             self.config.run_length_scheduling)
        ahead: Ahead | None = None  # the next turn's run, opened on its member while this one decodes
        try:
            while s.finish_reason is None:
                turn = policy.plan(s.step, s.remaining)
                if turn.weights:
                    await self._mix(s, turn.members, turn.weights, stats)
                    emit()
                else:
                    member = turn.members[0]
                    opened, ahead = ahead, None
                    ahead = self._open_next(plan, policy, s, member, s.step + turn.steps)
                    idle = [m for m in plan.weights if m != member and not (ahead and ahead.member == m)] \
                        if self.config.eager_sync else []
                    await self._run(s, member, turn.steps, stats, emit, idle, self._heals(plan, member),
                                    opened, ahead)
        finally:
            if ahead is not None:
                ahead.run.cancel()  # the text ended before its turn
            await self._release(s)
        return Choice(s.output_text(), [e.token for e in s.output()], [e.member for e in s.output()],
                      s.finish_reason, s.first_token_s, s.stretches(), s.index)

    def _heals(self, plan: Plan, member: str) -> bool:
        """Token healing for this member's runs. A healed token's id spans text another member wrote,
        so only a member whose tokenizer no other member shares heals (they would be sent that id)."""
        heal = self.config.token_healing if plan.token_healing is None else plan.token_healing
        return heal and all(self.infos[m].tokenizer != self.infos[member].tokenizer for m in plan.weights if m != member)

    async def _release(self, s: Session) -> None:
        """Free the session on every member that saw it (docs/architecture.md invariant 7), even when the request
        is being cancelled. The calls are sent before the first await, so no cancellation can drop
        them, and as no request's child, so Ray's recursive cancellation cannot either
        (router/members.py). The wait for their answers runs under a shield and for RELEASE_WAIT_S
        at most: a member restarting or paused answers later (a restarted one holds nothing), and
        the request, with its admission slots, must not wait for it (the soak saw gone clients'
        slots held through a member's restart, refusing others with 429).
        """
        for member in s.cursor:
            if (sync := self.syncs.pop((s.id, member), None)) is not None:
                sync.cancel()
        calls = asyncio.gather(*(self.members[m].release(s.id) for m in s.cursor), return_exceptions=True)
        try:
            await _awhile(calls)
        except asyncio.CancelledError:
            await _awhile(calls)
            raise

    def _open_next(self, plan: Plan, policy, s: Session, member: str, end: int) -> Ahead | None:
        """Open the run after this one on its member now (docs/architecture.md, "The next run in
        flight"): the schedule is known ahead (invariant 5), so the next member catches up on what it
        lacks (on its first turn, the prompt) while this one decodes, and its run waits only for this
        run's tokens. None where there is no next run, it is this member's or a mixture's, or the
        member cannot open one now."""
        if not self.config.next_run_ahead or end >= s.step + s.remaining:
            return None
        turn = policy.plan(end, s.step + s.remaining - end)
        nxt = turn.members[0]
        if turn.weights or nxt == member or not self.members[nxt].can_open():
            return None
        fresh = nxt not in s.cursor
        delta = s.take_delta(nxt) if self._feedable(s, nxt) else ()
        req = StepRequest(s.id, delta, end, turn.steps, s.params, fresh=fresh and bool(delta),
                          heal=self._heals(plan, nxt))
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

    async def _run(self, s: Session, member: str, steps: int, stats: Counter, emit, idle=(), heal=False,
                   opened: Ahead | None = None, ahead: Ahead | None = None) -> None:
        """One member catches up on its delta and decodes its run of steps, in one call whose tokens
        stream back as they are sampled. With eager_sync the `idle` members get those tokens as they
        come, and so does the run opened `ahead` on the next member; `opened` is this run, opened so
        during the turn before."""
        caught_up = s.step - s.cursor.get(member, 0)
        started = time.perf_counter()
        first_step, end = s.step, s.step + steps
        prev_end, sent, first_in = s.run_ended, time.time(), None  # wall clock, for the switch trace

        def request(delta, fresh):
            return StepRequest(s.id, delta, s.step, end - s.step, s.params, fresh=fresh, heal=heal)

        async def record(part: StepResult) -> bool:
            nonlocal first_in
            first_in = first_in or time.time()
            s.record(member, part.tokens, part.pieces, part.finish)
            emit()
            if s.finish_reason is not None or s.step >= end:
                s.run_ended = time.time()
                return True
            self._sync_idle(s, idle)
            if ahead is not None and self.config.eager_sync:
                self._feed(s, ahead)
            return False

        await self._step(s, member, request, stats, record, opened.run if opened else None)
        if self.trace is not None and prev_end and first_in:
            self.trace.append((s.id, first_step, member, prev_end, sent, first_in))
        if self.metrics:
            self.metrics.step(member, time.perf_counter() - started, caught_up)

    async def _mix(self, s: Session, members: tuple[str, ...], weights: tuple[float, ...], stats: Counter) -> None:
        """ce: every member's distribution, in parallel; sample from their weighted mixture."""
        results = await asyncio.gather(*(self._step(s, m, lambda delta, fresh: StepRequest(
            s.id, delta, s.step, 0, s.params, distribution=True, fresh=fresh), stats) for m in members))
        vocab = self.vocabs[frozenset(s.tokenizers[m] for m in members)]
        # One copy per distribution: float64 (the mixture's precision), writable as torch wants.
        mixture = vocab.mix([(s.tokenizers[m], w, torch.from_numpy(r.probs.astype(np.float64)))
                             for m, w, r in zip(members, weights, results)])  # (vocab,)
        token = pick_mixture(mixture, s.params, s.step)
        s.record(MIXTURE, [token], [vocab.pieces[token]])

    async def _step(self, s: Session, member: str, request, stats: Counter, on_part=None, opened=None) -> StepResult:
        """One step call that survives the member losing the session (eviction, restart): the log is
        replayed from the prompt (docs/architecture.md invariant 1). `on_part(part)` sees each streamed part and
        returns True when no more are wanted; a retry asks only for the steps still missing. `opened`:
        the run opened ahead on the member (the first attempt starts it with the rest of the log)."""
        last = StepResult()

        async def attempt():
            nonlocal last, opened
            if (sync := self.syncs.pop((s.id, member), None)) is not None:
                await sync  # the background catch-up went first: its tokens are off the delta
            fresh = member not in s.cursor  # before take_delta marks the log as seen
            stats.update(trips=1)
            run, opened = opened, None
            parts = run.run(s.take_delta(member), fresh) if run is not None else \
                self.members[member].stream(request(s.take_delta(member), fresh))
            async for part in self._answered(member, parts):
                stats.update(forwards=part.forwards)
                last = part
                if on_part and await on_part(part):
                    break
            return last

        def lost():
            s.forget(member)
            self.replays[member] += 1
            if self.metrics:
                self.metrics.replays.inc(1, {"member": member})

        try:
            return await self._retrying(member, attempt, lost)
        except (RequestError, CallCancelled):
            raise
        except Exception as e:
            log.exception("member %r failed on session %s", member, s.id)
            raise MemberFailedError(member, e) from e

    async def _bounded(self, member: str, call):
        """A call's answer within member_retry_s (see _answered). A member that is down is named (several
        members' calls may wait under one retry: log-probs)."""
        try:
            return await asyncio.wait_for(call, self.config.member_retry_s)
        except asyncio.TimeoutError:
            raise UnavailableError(f"member {member!r} did not answer within "
                                   f"{self.config.member_retry_s:g} s") from None
        except MemberDown as e:
            e.member = member
            raise

    async def _answered(self, member: str, parts: AsyncIterator[StepResult]) -> AsyncIterator[StepResult]:
        """The parts of one call, each within member_retry_s: a member that is alive but does not answer (a
        paused process, a hung device) fails the sessions waiting on it like one that stays down
        (docs/architecture.md invariant 6), where the call alone would wait for it forever."""
        async with aclosing(parts):
            while True:
                try:
                    part = await self._bounded(member, anext(parts))
                except StopAsyncIteration:
                    return
                yield part

    def _sync_idle(self, s: Session, idle) -> None:
        """eager_sync: send the tokens streamed so far to the idle members now, so that they catch up
        while the running member decodes, each on its own device. A member's next step waits for its
        sync first (see _step): an async actor does not keep the order of calls."""
        for member in idle:
            # A member without even the prompt gains nothing: it prefills when first chosen.
            if member not in s.cursor or (s.id, member) in self.syncs or s.cursor[member] == s.step:
                continue
            req = StepRequest(s.id, s.take_delta(member), s.step, 0, s.params)
            self.syncs[(s.id, member)] = asyncio.create_task(self._sync(s, member, req))

    async def _sync(self, s: Session, member: str, req: StepRequest) -> None:
        try:
            async for _ in self.members[member].stream(req):
                pass
        except (SessionLost, MemberDown):
            s.forget(member)  # it will get the whole log when chosen
        except CallCancelled:
            pass  # the request is ending; _release frees the session
        finally:
            if self.syncs.get((s.id, member)) is asyncio.current_task():
                del self.syncs[(s.id, member)]

    async def _retrying(self, member: str, attempt, lost=lambda: None):
        """Run `attempt()`; a member that is down is retried with backoff for up to member_retry_s, then the
        request fails with 503 / UNAVAILABLE (docs/architecture.md invariant 6). The last try is at the
        bound itself: a member back within member_retry_s serves the request (the backoff's last step
        once ended the wait up to 1 s early, and a soak failed on a member back 7.8 s after its kill
        with the bound at 10). `lost` runs before each retry."""
        deadline = time.monotonic() + self.config.member_retry_s
        delay = 0.05
        while True:
            try:
                return await attempt()
            except (SessionLost, MemberDown) as e:
                if (left := deadline - time.monotonic()) <= 0:
                    raise UnavailableError(f"member {getattr(e, 'member', member)!r} is unavailable ({e}); "
                                           f"gave up after {self.config.member_retry_s:g} s") from None
                if isinstance(e, MemberDown):
                    await asyncio.sleep(min(delay, left))  # backoff while Ray restarts the member
                    delay = min(2 * delay, 1.0)
            lost()

    async def _resume(self, plan: Plan) -> tuple[dict[str, list[int]] | None, list]:
        """A named session's prompt and log from its snapshot; (None, []) for a new one."""
        blob = await self.store.call("get", plan.session)
        if blob is None:
            if plan.prompt is None and plan.messages is None:
                raise NotFoundError(f"unknown session {plan.session!r}; start it with a prompt", "session")
            return None, []
        if plan.prompt is not None or plan.messages is not None:
            raise RequestError(f"session {plan.session!r} exists: continue it without a prompt", "prompt")
        prompt_ids, history = snapshot.load(blob)
        missing = [m for m in plan.weights if m not in prompt_ids]
        if missing:
            raise RequestError(f"session {plan.session!r} was not started with members {missing}", "weights")
        if history and history[-1].token in self.eos_ids.get(history[-1].tokenizer, ()):
            raise RequestError(f"session {plan.session!r} ended with an end-of-sequence token", "session")
        return prompt_ids, history

    async def _prompt_ids(self, plan: Plan) -> dict[str, list[int]]:
        names = list(plan.weights)
        if isinstance(plan.prompt, list):
            ids = [list(plan.prompt)] * len(names)
        else:
            ids = await self._tokenize(plan, names)
        for name, prompt in zip(names, ids):
            limit = self.infos[name].context_length
            if len(prompt) >= limit:
                raise RequestError(f"prompt is {len(prompt)} tokens for member {name!r}, whose context "
                                   f"is {limit} tokens; shorten it", "prompt")
        return dict(zip(names, ids))

    async def _tokenize(self, plan: Plan, names: list[str]) -> list[list[int]]:
        try:
            ids = await asyncio.gather(*(self._retrying(m, lambda m=m: self._bounded(
                m, self.members[m].prompt_ids(plan.prompt, plan.messages))) for m in names))
        except RequestError:
            raise
        except ValueError as e:  # e.g. a member without a chat template; Ray keeps the cause
            raise RequestError(str(getattr(e, "cause", e)), "messages") from None
        return ids

    async def _score(self, plan: Plan, prompt_ids: dict[str, list[int]], choice: Choice) -> LogProbs:
        prompt = prompt_ids[next(iter(plan.weights))]
        pieces = (await self._vocab(plan)).pieces
        names = ", ".join(plan.weights)
        return await self._retrying(names, lambda: logprobs.score(
            self.members, plan.weights, pieces, prompt + choice.token_ids, len(prompt), plan.logprobs,
            bound=self._bounded))

    async def _prompt_text(self, plan: Plan) -> str | None:
        if not isinstance(plan.prompt, list):
            return plan.prompt  # None for messages: each member rendered its own
        pieces = (await self._vocab(plan)).pieces
        return b"".join(pieces[t] for t in plan.prompt if t < len(pieces)).decode("utf-8", errors="replace")

    async def _vocab(self, plan: Plan) -> SharedVocab | UnionVocab:
        """The vocabulary ce samples from: the members' shared one, or the union of theirs by token
        bytes (router/vocab.py). Fetched once per set of tokenizers."""
        one = {self.infos[m].tokenizer: m for m in plan.weights}  # tokenizer -> a member that has it
        key = frozenset(one)
        if key not in self.vocabs:
            pieces = await asyncio.gather(*(self._bounded(m, self.members[m].pieces()) for m in one.values()))
            if len(one) == 1:
                self.vocabs[key] = SharedVocab(next(iter(one)), pieces[0])
            else:
                missing = {b for m in plan.weights for b in self.infos[m].missing_bytes}
                union = UnionVocab(dict(zip(one, pieces)), self.eos_ids, missing)
                self.eos_ids[union.fingerprint] = frozenset({EOS})
                self.vocabs[key] = union
        return self.vocabs[key]

    async def live_sessions(self) -> dict[str, int]:
        counts = await asyncio.gather(*(m.live_sessions() for m in self.members.values()))
        return dict(zip(self.members, counts))


async def _awhile(calls: asyncio.Future) -> None:
    """Wait up to RELEASE_WAIT_S for calls that are already sent; they go on if it is not enough."""
    try:
        await asyncio.wait_for(asyncio.shield(calls), RELEASE_WAIT_S)
    except asyncio.TimeoutError:
        pass

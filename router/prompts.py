"""A request's prompt side (docs/architecture.md, "router"): what its sessions start from (each
member's prompt ids, or a named session's log resumed from its snapshot), the vocabularies ce samples
from, cached per set of tokenizers (router/vocab.py), and the prompt half of scoring (echo, logprobs).
"""
from __future__ import annotations

import asyncio

from mixserve.actors.messages import MemberInfo

from . import logprobs, snapshot
from .calls import MemberCalls
from .logprobs import LogProbs
from .request import NotFoundError, Plan, RequestError, UnavailableError
from .result import Choice
from .session_log import Entry
from .vocab import EOS, SharedVocab, UnionVocab


class Prompts:
    """What a router's requests start from; one per router, its vocabularies cached across requests."""

    def __init__(self, infos: dict[str, MemberInfo], calls: MemberCalls, store):
        self.infos = infos
        self.calls = calls
        self.store = store  # session snapshots, by id (router/snapshot.py)
        # tokenizer fingerprint -> every member's end-of-sequence ids for it; ce's union vocabularies
        # add theirs as they are built
        self.eos_ids: dict[str, frozenset[int]] = {}
        for info in infos.values():
            self.eos_ids[info.tokenizer] = self.eos_ids.get(info.tokenizer, frozenset()) | set(info.eos_ids)
        self.vocabs: dict[frozenset[str], SharedVocab | UnionVocab] = {}  # ce: members' tokenizers -> vocabulary

    async def resume(self, plan: Plan) -> tuple[dict[str, list[int]] | None, list[Entry], dict | None]:
        """A named session's prompt and log from its snapshot, and where its members hold its KV
        (router/router.py's `_hold`); (None, [], None) for a new one."""
        blob, held = await self._stored("take", snapshot.stored_name(plan.owner, plan.session))
        if blob is None:
            if plan.prompt is None and plan.messages is None:
                raise NotFoundError(f"unknown session {plan.session!r}; start it with a prompt", "session")
            return None, [], None
        if plan.prompt is not None or plan.messages is not None:
            raise RequestError(f"session {plan.session!r} exists: continue it without a prompt", "prompt")
        prompt_ids, history = snapshot.load(blob)
        missing = [m for m in plan.weights if m not in prompt_ids]
        if missing:
            raise RequestError(f"session {plan.session!r} was not started with members {missing}", "weights")
        if history and history[-1].token in self.eos_ids.get(history[-1].tokenizer, ()):
            raise RequestError(f"session {plan.session!r} ended with an end-of-sequence token", "session")
        return prompt_ids, history, held

    async def save(self, plan: Plan, prompt_ids: dict[str, list[int]], log: list[Entry], held: dict | None) -> None:
        """The session's snapshot, which the next request on it resumes."""
        await self._stored("put", snapshot.stored_name(plan.owner, plan.session), snapshot.dump(prompt_ids, log),
                           held)

    async def _stored(self, method: str, *args):
        """A call to the session store, answered within member_retry_s or 503, as a member's would be
        (docs/architecture.md invariant 6). Ray restarts the store when its process dies and holds the
        calls made meanwhile; one lost with the process is sent again."""
        calls = self.calls
        try:
            return await asyncio.wait_for(calls.retrying("session store", lambda: self.store.call(method, *args)),
                                          calls.retry_s)
        except (asyncio.TimeoutError, UnavailableError):
            raise snapshot.StoreUnavailableError(
                f"the session store did not answer within {calls.retry_s:g} s (member_retry_s); "
                f"retry the request") from None

    async def ids(self, plan: Plan) -> dict[str, list[int]]:
        """Each member's prompt tokens: the request's ids, or its text or messages in the member's
        own tokenizer and chat template (router/request.py's check_context then checks their lengths)."""
        names = list(plan.weights)
        if isinstance(plan.prompt, list):
            ids = [list(plan.prompt)] * len(names)
        else:
            ids = await self._tokenize(plan, names)
        for name, prompt in zip(names, ids):
            if not prompt:  # a member cannot start from nothing: its first step reads the last token
                raise RequestError(f"the prompt is no tokens at all for member {name!r}; send some text",
                                   "prompt" if plan.messages is None else "messages")
        return dict(zip(names, ids))

    async def _tokenize(self, plan: Plan, names: list[str]) -> list[list[int]]:
        calls = self.calls
        try:
            ids = await asyncio.gather(*(calls.retrying(m, lambda m=m: calls.bounded(
                m, calls.members[m].prompt_ids(plan.prompt, plan.messages))) for m in names))
        except RequestError:
            raise
        except ValueError as e:  # e.g. a member without a chat template; Ray keeps the cause
            raise RequestError(str(getattr(e, "cause", e)), "messages") from None
        return ids

    async def score(self, plan: Plan, prompt_ids: dict[str, list[int]], choice: Choice) -> LogProbs:
        """The choice's log-probs (and the prompt's, for echo) under the request's weights."""
        prompt = prompt_ids[next(iter(plan.weights))]
        pieces = (await self.vocab(plan)).pieces
        names = ", ".join(plan.weights)
        calls = self.calls
        return await calls.retrying(names, lambda: logprobs.score(
            calls.members, plan.weights, pieces, prompt + choice.token_ids, len(prompt), plan.logprobs,
            bound=calls.bounded))

    async def text(self, plan: Plan) -> str | None:
        """The prompt as text, for echo."""
        if not isinstance(plan.prompt, list):
            return plan.prompt  # None for messages: each member rendered its own
        pieces = (await self.vocab(plan)).pieces
        return b"".join(pieces[t] for t in plan.prompt if t < len(pieces)).decode("utf-8", errors="replace")

    async def vocab(self, plan: Plan) -> SharedVocab | UnionVocab:
        """The vocabulary ce samples from: the members' shared one, or the union of theirs by token
        bytes (router/vocab.py). Fetched once per set of tokenizers."""
        one = {self.infos[m].tokenizer: m for m in plan.weights}  # tokenizer -> a member that has it
        key = frozenset(one)
        if key not in self.vocabs:
            calls = self.calls
            pieces = await asyncio.gather(*(calls.bounded(m, calls.members[m].pieces()) for m in one.values()))
            if len(one) == 1:
                self.vocabs[key] = SharedVocab(next(iter(one)), pieces[0])
            else:
                missing = {b for m in plan.weights for b in self.infos[m].missing_bytes}
                union = UnionVocab(dict(zip(one, pieces)), self.eos_ids, missing)
                self.eos_ids[union.fingerprint] = frozenset({EOS})
                self.vocabs[key] = union
        return self.vocabs[key]

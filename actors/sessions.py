"""A member's sessions as token logs, whatever computes them (docs/architecture.md, "member").

Both engines keep the same book: the router's deltas turned into this member's token ids (text from
another tokenizer re-tokenized at the seam, token healing's backed-off token), each sampled token taken
into the log the same way (its piece, the end of the run, healing's first token), least recently used
sessions evicted past the configured bounds. Each engine holds a book (BookFront answers the calls it
alone answers): the transformers core (actors/member.py) keeps its own KV buffers beside it; the vLLM
engine (actors/vllm_engine.py) hands the log to vLLM, whose prefix cache is the KV.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import jinja2
import torch

from .codec import TokenCodec
from .messages import InputRefused, MemberInfo, Segment, SessionLost, StepRequest
from .packed import KV


@dataclass
class SessionCache:
    ids: list[int] = field(default_factory=list)  # the sequence as this member tokenizes it
    kv: KV = field(default_factory=KV)  # keys and values of ids[:cached] (transformers engine)
    cached: int = 0  # ids[:cached] are valid in kv; positions past it are overwritten as it grows
    fixed: int = 0  # ids[:fixed] arrived as ids (prompt, shared tokenizer): never re-tokenized; the
    # member's own tokens, sampled or replayed, stay past it (its last one may merge with later text)
    heal: bytes = b""  # token healing: the next token must start with these bytes, already in the log


HELD = 256  # named sessions' caches kept between turns per member (memory: each holds its KV)


class SessionBook:
    """One member's tokenizer and its sessions' logs."""

    def __init__(self, name: str, tokenizer, eos_ids: tuple[int, ...], context_length: int,
                 max_sessions: int | None = None, max_cached_tokens: int | None = None):
        self.name = name
        self.tokenizer = tokenizer
        self.codec = TokenCodec(tokenizer)
        self.vocab_size = len(self.codec.pieces)  # the model's padded rows past this are never sampled
        self.eos_ids = eos_ids
        self.context_length = context_length
        self.sessions: OrderedDict[str, SessionCache] = OrderedDict()  # least recently used first
        # Named sessions between their turns (release with keep): their KV kept for the next turn, which
        # any router replica may send (router/pools.py); at most HELD of them, least recently used dropped.
        self.held: OrderedDict[str, SessionCache] = OrderedDict()
        self.max_sessions = max_sessions
        self.max_cached_tokens = max_cached_tokens
        self.evictions = 0

    def info(self) -> MemberInfo:
        return MemberInfo(self.name, self.codec.fingerprint, self.vocab_size, self.context_length, self.eos_ids,
                          self.codec.missing_bytes)

    def prompt_ids(self, prompt: str | None = None, messages: list[dict] | None = None) -> list[int]:
        """The prompt in this member's tokens: a chat through its own chat template."""
        if messages is not None:
            if not self.tokenizer.chat_template:
                raise InputRefused(f"member {self.name!r} has no chat template; send a prompt instead")
            try:
                text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except jinja2.TemplateError as e:  # the template's own rule (Gemma's: roles must alternate)
                raise InputRefused(f"member {self.name!r}'s chat template refused these messages: {e}") from None
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(prompt)

    def pieces(self) -> list[bytes]:
        """Bytes per token id: the router samples ce tokens itself and needs their text."""
        return self.codec.pieces

    def begin(self, req: StepRequest, busy: frozenset[str] = frozenset()) -> SessionCache:
        """The session's cache with the request's delta appended; `busy` sessions are never evicted."""
        if req.fresh:
            self.held.pop(req.session, None)
            s = self.sessions[req.session] = SessionCache()
        elif (s := self.sessions.get(req.session)) is None and (s := self.held.pop(req.session, None)) is not None:
            self.sessions[req.session] = s
        elif s is None:
            raise SessionLost(req.session)
        self.sessions.move_to_end(req.session)
        self._evict(keep=busy | {req.session})
        for seg in req.delta:
            self._append(s, seg)
        if req.heal and not req.distribution and req.delta and req.delta[-1].text is not None \
                and len(s.ids) > s.fixed:
            # Token healing: text another tokenizer wrote may end mid-word, where our own tokens would
            # not have split it ("hel" + "lo", not "hello"). Back off our last token and make the next
            # one extend its bytes, so the word is spelt as this model would spell it.
            s.heal = self.codec.piece(s.ids.pop())
            s.cached = min(s.cached, len(s.ids))
        return s

    def full(self, s: SessionCache) -> bool:
        return len(s.ids) >= self.context_length

    def healing(self, s: SessionCache) -> tuple[bytes, torch.Tensor | None]:
        """Token healing's hold on the session's next token, taken once: the backed-off bytes it must
        start with, and the ids whose bytes do (None when the session is not healing)."""
        heal, s.heal = s.heal, b""
        return heal, self.codec.extending(heal) if heal else None

    def accept(self, s: SessionCache, token: int, heal: bytes, more: bool) -> tuple[bytes, str] | None:
        """Append a sampled token to the session's log: its piece and why the run ends with it ("eos";
        "length" when the context is full and the run wanted `more`; "" when it goes on). A healed
        token's piece is only its bytes past `heal`, the backed-off ones the log holds already. None
        when healing picked the backed-off token itself (the word ends where the other member ended
        it): no text yet, and the same step is sampled again."""
        s.ids.append(token)
        if token in self.eos_ids:
            return b"", "eos"
        piece = self.codec.piece(token)[len(heal):]
        if heal and not piece:
            return None
        return piece, "length" if more and self.full(s) else ""

    def release(self, session: str, keep: bool = False) -> bool:
        """Forget the session; with `keep`, hold its log and KV for its next turn instead (not live)."""
        s = self.sessions.pop(session, None)
        if keep and s is not None:
            self.held[session] = s
            while len(self.held) > HELD:
                self.held.popitem(last=False)
        return s is not None

    def live_sessions(self) -> int:
        return len(self.sessions)

    def _evict(self, keep: set[str] | frozenset[str]) -> None:
        """Drop least recently used logs past max_sessions / max_cached_tokens; their sessions
        replay from the router's log when they come back."""
        def over() -> bool:
            if self.max_sessions is not None and len(self.sessions) > self.max_sessions:
                return True
            return self.max_cached_tokens is not None and \
                sum(c.cached for c in self.sessions.values()) > self.max_cached_tokens
        while over():
            victim = next((sid for sid in self.sessions if sid not in keep), None)
            if victim is None:
                return
            del self.sessions[victim]
            self.evictions += 1

    def _append(self, s: SessionCache, seg: Segment) -> None:
        if seg.text is None:
            s.ids.extend(seg.ids)
            if not seg.own:
                s.fixed = len(s.ids)
            return
        # Another tokenizer wrote this text. Our last token may merge with its start (our "hel" +
        # their "lo" is our "hello"), so re-tokenize from there and keep the longest matching prefix.
        back = s.ids[-1] if len(s.ids) > s.fixed else None
        new = self.codec.encode((self.codec.piece(back) if back is not None else b"") + seg.text)
        if back is not None:
            if new[:1] == [back]:
                new = new[1:]
            else:
                s.ids.pop()
                s.cached = min(s.cached, len(s.ids))
        s.ids.extend(new)


class BookFront:
    """The member calls answered from the session book alone (actors/protocol.py's Member), for every
    engine and core: each holds its book in `book`, none is one."""

    book: SessionBook

    def info(self) -> MemberInfo:
        return self.book.info()

    def prompt_ids(self, prompt: str | None = None, messages: list[dict] | None = None) -> list[int]:
        return self.book.prompt_ids(prompt, messages)

    def pieces(self) -> list[bytes]:
        return self.book.pieces()

    def live_sessions(self) -> int:
        return self.book.live_sessions()

    def __repr__(self) -> str:  # Ray names an actor by it in logs and its state API
        return f"{type(self).__name__}(name={self.book.name})"


def eos_ids(generation_eos, tokenizer) -> tuple[int, ...]:
    """A model's end tokens: its generation config's and its tokenizer's."""
    ids = [] if generation_eos is None else [generation_eos] if isinstance(generation_eos, int) else list(generation_eos)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return tuple(sorted(set(ids)))

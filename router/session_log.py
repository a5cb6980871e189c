"""One request's state machine: the authoritative log and each member's cursor (docs/architecture.md invariant 1).

Plain Python, no Ray and no tensors. The log holds every generated token with its bytes; a member's
cursor says how much of the log its KV cache has seen, so what it is sent is exactly the rest.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from mixserve.actors.messages import SamplingParams, Segment

MIXTURE = "mixture"  # the producer of a ce token: every member at once


@dataclass(frozen=True)
class Chunk:
    """A streamed piece of one choice: one turn's tokens (one member, or the mixture under ce)."""

    index: int  # which of the n samples
    text: str
    token_ids: list[int]
    member: str
    finish_reason: str | None = None


@dataclass(frozen=True)
class Entry:
    member: str  # who produced it (MIXTURE under ce)
    token: int  # in the producer's vocabulary
    piece: bytes
    tokenizer: str  # the producer's tokenizer fingerprint


class Session:
    def __init__(
        self,
        prompt_ids: dict[str, list[int]],
        tokenizers: dict[str, str],
        eos_ids: dict[str, frozenset[int]],
        params: SamplingParams,
        index: int = 0,
        history: list[Entry] | None = None,
    ):
        """`history`: the log of an earlier request on the same session, continued here (its tokens
        keep their step numbers, so 20 + 20 tokens are the same as 40 at once)."""
        self.run_ended: float | None = None  # wall clock of the last run's last token (router's switch trace)
        self.id = uuid.uuid4().hex
        self.index = index  # which of the request's n samples
        self.prompt_ids = prompt_ids  # member -> its own prompt tokens
        self.tokenizers = tokenizers  # member (and MIXTURE under ce) -> fingerprint
        self.eos_ids = eos_ids  # fingerprint -> every member's end-of-sequence ids for it
        self.params = params
        self.log: list[Entry] = list(history or [])
        self.cursor: dict[str, int] = {}  # member -> entries its KV has seen; absent = not even the prompt
        self.text = bytearray(b"".join(e.piece for e in self.log))
        self.text_end: int | None = None  # where a stop string starts
        self.finish_reason: str | None = None
        self.first, self.base = len(self.log), len(self.text)  # where this request's output starts
        self.shown_bytes = self.base  # text already streamed to the client
        self.shown_tokens = self.first
        self.started = time.perf_counter()
        self.first_token_s: float | None = None
        # A named session's members that hold its KV after this turn: {"session": id, "members": {member:
        # [replica, cursor]}}, kept with its snapshot for the next turn (router/router.py's `_hold`)
        self.held: dict | None = None

    @property
    def step(self) -> int:
        """The number of the step sampled next: a counter, the one meaning of "step" in the router."""
        return len(self.log)

    @property
    def remaining(self) -> int:
        return self.first + self.params.max_tokens - len(self.log)

    def take_delta(self, member: str) -> tuple[Segment, ...]:
        """What `member` has not seen, as ids where it shares the producer's tokenizer, else text.
        Marks it as seen: the caller sends it now."""
        segments: list[Segment] = []
        if member not in self.cursor:
            segments.append(Segment(ids=tuple(self.prompt_ids[member])))
        own = self.tokenizers[member]
        run: list = []  # consecutive entries sent alike: ids of one producer kind, or text
        kind = None

        def flush() -> None:
            if run:
                segments.append(Segment(text=b"".join(run)) if kind == "text" else
                                Segment(ids=tuple(run), own=kind == "own"))
                run.clear()

        for e in self.log[self.cursor.get(member, 0) :]:
            # The member's own tokens come back as its own (mergeable at the end, as when it sampled
            # them); a peer's with its tokenizer as fixed ids; anyone else's as text to re-tokenize.
            now = "text" if e.tokenizer != own else "own" if e.member == member else "ids"
            if now != kind:
                flush()
                kind = now
            run.append(e.piece if now == "text" else e.token)
        flush()
        self.cursor[member] = len(self.log)
        return tuple(segments)

    def forget(self, member: str) -> None:
        """The member lost its cache for this session: next time it gets the whole log."""
        self.cursor.pop(member, None)

    def record(self, member: str, tokens: list[int], pieces: list[bytes], finish: str = "") -> None:
        """Append tokens produced by `member`; a member has seen its own tokens."""
        tokenizer = self.tokenizers[member]
        start = len(self.log)
        for token, piece in zip(tokens, pieces):
            if self.first_token_s is None:
                self.first_token_s = time.perf_counter() - self.started
            self.log.append(Entry(member, token, piece, tokenizer))
            if token in self.eos_ids[tokenizer]:
                self.finish_reason = "stop"
                break
            self._append_text(piece)
            if self.finish_reason:
                break
        if self.cursor.get(member) == start:  # it was up to date when it generated these
            self.cursor[member] = len(self.log)
        if self.finish_reason is None and (finish == "length" or self.remaining <= 0):
            self.finish_reason = "length"
        elif self.finish_reason is None and finish == "eos":
            self.finish_reason = "stop"

    def _append_text(self, piece: bytes) -> None:
        start = len(self.text)
        self.text += piece
        for stop in self.params.stop:
            s = stop.encode()
            at = self.text.find(s, max(0, start - len(s) + 1))
            if at >= 0 and (self.text_end is None or at < self.text_end):
                self.text_end = at
                self.finish_reason = "stop"

    def output(self) -> list[Entry]:
        return self.log[self.first :]

    def output_text(self) -> str:
        return bytes(self.text[self.base : self.text_end]).decode("utf-8", errors="replace")

    def take_chunk(self) -> Chunk:
        """What is new since the last chunk. Text is held back while it could still be the start of a
        stop string or ends inside a UTF-8 character; the last chunk flushes it."""
        end = len(self.text) if self.text_end is None else self.text_end
        if self.finish_reason is None:
            hold = max((len(s.encode()) for s in self.params.stop), default=1) - 1
            end = _utf8_boundary(self.text, self.shown_bytes, max(self.shown_bytes, end - hold))
        text = bytes(self.text[self.shown_bytes : end]).decode("utf-8", errors="replace")
        new = self.log[self.shown_tokens :]
        self.shown_bytes, self.shown_tokens = end, len(self.log)
        member = new[-1].member if new else ""
        return Chunk(self.index, text, [e.token for e in new], member, self.finish_reason)

    def stretches(self) -> list[tuple[str, str]]:
        """(member, text) for each run of consecutive tokens from one member, up to any stop string."""
        out: list[tuple[str, bytearray]] = []
        budget = (len(self.text) if self.text_end is None else self.text_end) - self.base
        for e in self.output():
            piece = e.piece[: max(0, budget)]
            budget -= len(e.piece)
            if out and out[-1][0] == e.member:
                out[-1][1].extend(piece)
            else:
                out.append((e.member, bytearray(piece)))
        return [(m, bytes(b).decode("utf-8", errors="replace")) for m, b in out]


def _utf8_boundary(buf: bytearray, start: int, end: int) -> int:
    """Back `end` off an incomplete UTF-8 character at the end of buf[start:end]."""
    for back in range(1, min(4, end - start) + 1):
        lead = buf[end - back]
        if lead & 0xC0 != 0x80:  # not a continuation byte
            need = 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 1
            return end if back >= need else end - back
    return end

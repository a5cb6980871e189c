"""The member core: one causal LM and a KV cache per session (docs/architecture.md, "member").

Plain Python over torch. The Ray actor is actors/engine.py's MemberEngine, which batches the
sessions ready at each moment into one `forward`; `step` runs one request whole, in this thread.
A step appends a session's unseen log (prefill, catch-up) and then decodes a run of tokens,
sampling here on the member's own device.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from . import invariant, packed
from .codec import TokenCodec
from .loading import ModelSource, load
from .packed import KV
from .messages import MemberInfo, Scores, Segment, SessionLost, StepRequest, StepResult
from .sampling import pick


@dataclass
class SessionCache:
    ids: list[int] = field(default_factory=list)  # the sequence as this member tokenizes it
    kv: KV = field(default_factory=KV)  # keys and values of ids[:cached]
    cached: int = 0  # ids[:cached] are valid in kv; positions past it are overwritten as it grows
    fixed: int = 0  # ids[:fixed] arrived as ids (prompt, shared tokenizer): never re-tokenized
    heal: bytes = b""  # token healing: the next token must start with these bytes, already in the log


class MemberCore:
    """One model and its sessions. `begin` applies a step request's delta, `forward` runs any number
    of sessions in one packed model call, `advance` samples a session's next token from its row: the
    batching engine (actors/engine.py) and the whole-run `step` below are both made of these."""

    def __init__(self, name: str, source: ModelSource, dtype: str = "auto", threads: int = 1,
                 max_sessions: int | None = None, max_cached_tokens: int | None = None,
                 batch_invariant: bool = False):
        self.name = name
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu":
            # One simulated accelerator per member (docs/architecture.md, "Environment facts").
            torch.set_num_threads(threads)
        self.model, self.tokenizer = load(source, dtype, self.device)
        packed.register()
        self.model.set_attn_implementation(packed.ATTENTION)
        self.codec = TokenCodec(self.tokenizer)
        self.vocab_size = len(self.codec.pieces)  # the model's padded rows past this are never sampled
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 1 << 20))
        self.sessions: OrderedDict[str, SessionCache] = OrderedDict()  # least recently used first
        self.max_sessions = max_sessions
        self.max_cached_tokens = max_cached_tokens
        self.batch_invariant = batch_invariant
        self.forwards = 0  # model calls
        self.rows = 0  # sessions advanced, summed over model calls
        self.evictions = 0

    def info(self) -> MemberInfo:
        return MemberInfo(self.name, self.codec.fingerprint, self.vocab_size, self.context_length, self.eos_ids,
                          self.codec.missing_bytes)

    def prompt_ids(self, prompt: str | None = None, messages: list[dict] | None = None) -> list[int]:
        """The prompt in this member's tokens: a chat through its own chat template."""
        if messages is not None:
            if not self.tokenizer.chat_template:
                raise ValueError(f"member {self.name!r} has no chat template; send a prompt instead")
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(prompt)

    def step(self, req: StepRequest) -> StepResult:
        """A whole step in this thread, one session per forward (in-process members and the
        ce-sequential baseline). Same numbers as the batched engine: see `forward`."""
        s = self.begin(req)
        if req.distribution:
            return StepResult(probs=self.forward([s])[0].exp().numpy(), forwards=1)
        tokens: list[int] = []
        pieces: list[bytes] = []
        finish = ""
        forwards = 0
        while len(tokens) < req.steps:
            if self.full(s):
                finish = "length"
                break
            forwards += 1
            if (out := self.advance(s, self.forward([s])[0], req.sampling, req.first_step + len(tokens))) is None:
                continue  # token healing kept the word's end: this step samples again
            token, piece, finish = out
            tokens.append(token)
            pieces.append(piece)
            if finish:
                break
        return StepResult(tokens, pieces, finish, forwards=forwards)

    def begin(self, req: StepRequest, busy: frozenset[str] = frozenset()) -> SessionCache:
        """The session's cache with the request's delta appended; `busy` sessions are never evicted."""
        if req.fresh:
            s = self.sessions[req.session] = SessionCache()
        elif (s := self.sessions.get(req.session)) is None:
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

    def advance(self, s: SessionCache, logp: torch.Tensor, sampling, step: int) -> tuple[int, bytes, str] | None:
        """Sample step `step` from this session's row of log-probs and append it. A healed token's
        piece is only its bytes past the backed-off ones: those are in the log already. None when
        healing picked the backed-off token itself (the word ends where the other member ended it):
        no text yet, and the caller samples the same step again after feeding it."""
        heal, s.heal = s.heal, b""
        if heal:
            allowed = torch.full_like(logp, float("-inf"))
            allowed[self.codec.extending(heal)] = 0.0
            logp = logp + allowed
        token = pick(logp, sampling, step)
        s.ids.append(token)
        if token in self.eos_ids:
            return token, b"", "eos"
        piece = self.codec.piece(token)[len(heal):]
        return None if heal and not piece else (token, piece, "")

    @torch.inference_mode()
    def forward(self, rows: list[SessionCache]) -> torch.Tensor:
        """Feed every row's uncached tail in one packed model call; next-token log-probs (rows, vocab).

        Each session attends only to itself (actors/packed.py). With batch_invariant every matrix
        product has the same shape (actors/invariant.py) and each query attends alone, so a session's
        numbers are the same alone, in any batch, or replayed in one prefill."""
        segments, ids, positions, last = [], [], [], []
        for s in rows:
            if s.cached == len(s.ids):
                s.cached -= 1  # everything is cached but we need the last position's logits again
            tail = s.ids[s.cached :]
            segments.append(packed.Segment(s.kv, s.cached, len(ids), len(tail)))
            positions.extend(range(s.cached, len(s.ids)))
            ids.extend(tail)
            last.append(len(ids) - 1)
        logp = self._logp(segments, ids, positions, last)
        self.rows += len(rows)
        for s in rows:
            s.cached = len(s.ids)
        return logp

    @torch.inference_mode()
    def score(self, ids: list[int], top: int = 0, rows: bool = False) -> Scores:
        """Teacher-forced log-probs of ids[1:], each given the ids before it (echo, logprobs), in one
        forward that touches no session. `rows`: every position's whole row, for a mixture."""
        logp = self._logp([packed.Segment(packed.KV(), 0, 0, len(ids))], ids, list(range(len(ids))),
                          list(range(len(ids) - 1)))  # (L-1, vocab)
        targets = torch.tensor(ids[1:], dtype=torch.long)
        chosen = logp.gather(1, targets[:, None])[:, 0]  # (L-1,)
        if rows:
            return Scores(chosen.numpy(), rows=logp.numpy())
        best = logp.topk(min(top, self.vocab_size), dim=-1)  # (L-1, top) each
        return Scores(chosen.numpy(), best.indices.numpy(), best.values.numpy())

    def _logp(self, segments: list, ids: list[int], positions: list[int], keep: list[int]) -> torch.Tensor:
        """One packed model call; log-probs (len(keep), vocab) at the positions in `keep`."""
        with packed.packing(tuple(segments), per_query=self.batch_invariant), \
                invariant.tiles() if self.batch_invariant else contextlib.nullcontext():
            out = self.model(input_ids=torch.tensor([ids], device=self.device),
                             position_ids=torch.tensor([positions], device=self.device), use_cache=False,
                             logits_to_keep=torch.tensor(keep, device=self.device))
        self.forwards += 1
        logits = out.logits[0, :, : self.vocab_size].float()
        return torch.log_softmax(logits, dim=-1).cpu()

    def pieces(self) -> list[bytes]:
        """Bytes per token id: the router samples ce tokens itself and needs their text."""
        return self.codec.pieces

    def release(self, session: str) -> bool:
        return self.sessions.pop(session, None) is not None

    def live_sessions(self) -> int:
        return len(self.sessions)

    def _evict(self, keep: set[str] | frozenset[str]) -> None:
        """Drop least recently used caches past max_sessions / max_cached_tokens; their sessions
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


def _eos_ids(model, tokenizer) -> tuple[int, ...]:
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return tuple(sorted(set(ids)))

"""The member core: one causal LM and a KV cache per session (DESIGN.md, "member").

Plain Python over torch; the Ray actor is `ray.remote(MemberCore)` with placement options (see
cluster/placement.py). One operation, `step`, appends a session's unseen log (prefill, catch-up) and
then decodes a run of tokens, sampling here on the member's own device.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from .codec import TokenCodec
from .loading import ModelSource, load
from .messages import MemberInfo, Segment, SessionLost, StepRequest, StepResult
from .sampling import pick


@dataclass
class SessionCache:
    ids: list[int] = field(default_factory=list)  # the sequence as this member tokenizes it
    kv: object = None  # transformers Cache holding ids[:cached]
    cached: int = 0  # ids[:cached] are valid in kv
    kv_len: int = 0  # tokens kv holds; past `cached` they are stale and get cropped
    fixed: int = 0  # ids[:fixed] arrived as ids (prompt, shared tokenizer): never re-tokenized


class MemberCore:
    def __init__(self, name: str, source: ModelSource, dtype: str = "auto", threads: int = 1,
                 max_sessions: int | None = None, max_cached_tokens: int | None = None):
        self.name = name
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu":
            torch.set_num_threads(threads)  # one simulated accelerator per member (DESIGN.md)
        self.model, self.tokenizer = load(source, dtype, self.device)
        self.codec = TokenCodec(self.tokenizer)
        self.vocab_size = len(self.codec.pieces)  # the model's padded rows past this are never sampled
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 1 << 20))
        self.sessions: OrderedDict[str, SessionCache] = OrderedDict()  # least recently used first
        self.max_sessions = max_sessions
        self.max_cached_tokens = max_cached_tokens
        self.forwards = 0
        self.evictions = 0

    def info(self) -> MemberInfo:
        return MemberInfo(self.name, self.codec.fingerprint, self.vocab_size, self.context_length, self.eos_ids)

    def prompt_ids(self, prompt: str | None = None, messages: list[dict] | None = None) -> list[int]:
        """The prompt in this member's tokens: a chat through its own chat template."""
        if messages is not None:
            if not self.tokenizer.chat_template:
                raise ValueError(f"member {self.name!r} has no chat template; send a prompt instead")
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(prompt)

    def step(self, req: StepRequest) -> StepResult:
        if req.fresh:
            s = self.sessions[req.session] = SessionCache()
        elif (s := self.sessions.get(req.session)) is None:
            raise SessionLost(req.session)
        self.sessions.move_to_end(req.session)
        self._evict(keep=req.session)
        for seg in req.delta:
            self._append(s, seg)
        if req.distribution:
            logp = self._forward(s)  # (vocab,)
            return StepResult(probs=logp.exp().float().cpu().numpy(), forwards=1)
        tokens: list[int] = []
        pieces: list[bytes] = []
        finish = ""
        for t in range(req.first_step, req.first_step + req.steps):
            if len(s.ids) >= self.context_length:
                finish = "length"
                break
            token = pick(self._forward(s), req.sampling, t)
            s.ids.append(token)
            tokens.append(token)
            if token in self.eos_ids:
                pieces.append(b"")
                finish = "eos"
                break
            pieces.append(self.codec.piece(token))
        return StepResult(tokens, pieces, finish, forwards=len(tokens))

    def pieces(self) -> list[bytes]:
        """Bytes per token id: the router samples ce tokens itself and needs their text."""
        return self.codec.pieces

    def release(self, session: str) -> bool:
        return self.sessions.pop(session, None) is not None

    def live_sessions(self) -> int:
        return len(self.sessions)

    def _evict(self, keep: str) -> None:
        """Drop least recently used caches past max_sessions / max_cached_tokens; their sessions
        replay from the router's log when they come back."""
        def over() -> bool:
            if self.max_sessions is not None and len(self.sessions) > self.max_sessions:
                return True
            return self.max_cached_tokens is not None and \
                sum(c.kv_len for c in self.sessions.values()) > self.max_cached_tokens
        while len(self.sessions) > 1 and over():
            victim = next(iter(self.sessions))
            if victim == keep:
                self.sessions.move_to_end(keep)
                victim = next(iter(self.sessions))
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

    @torch.inference_mode()
    def _forward(self, s: SessionCache) -> torch.Tensor:
        """Feed the uncached tail of the session; return next-token log-probs (vocab,)."""
        if s.cached == len(s.ids):
            s.cached -= 1  # everything is cached but we need the last position's logits again
        self._crop(s)
        tail = torch.tensor([s.ids[s.cached :]], device=self.device)  # (1, new)
        out = self.model(input_ids=tail, past_key_values=s.kv, use_cache=True, logits_to_keep=1)
        self.forwards += 1
        s.kv, s.cached = out.past_key_values, len(s.ids)
        s.kv_len = s.cached
        return torch.log_softmax(out.logits[0, -1, : self.vocab_size].float(), dim=-1)

    def _crop(self, s: SessionCache) -> None:
        extra = s.kv_len - s.cached
        if s.kv is None or extra <= 0:
            return
        try:
            s.kv.crop(-extra)
            s.kv_len = s.cached
        except RuntimeError:
            # A sliding-window layer past its window cannot roll back; the cache is soft state, so
            # rebuild it from the ids (DESIGN.md invariant 1).
            s.kv, s.cached, s.kv_len = None, 0, 0


def _eos_ids(model, tokenizer) -> tuple[int, ...]:
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return tuple(sorted(set(ids)))

"""The member core: one causal LM and a KV cache per session (docs/architecture.md, "member").

Plain Python over torch. The Ray actor is actors/engine.py's MemberEngine, which batches the
sessions ready at each moment into one `forward`; `step` runs one request whole, in this thread.
A step appends a session's unseen log (prefill, catch-up) and then decodes a run of tokens,
sampling here on the member's own device.
"""
from __future__ import annotations

import contextlib

import torch

from . import invariant, lora, packed
from .loading import ModelSource
from .messages import InputRefused, Scores, StepRequest, StepResult
from .sampling import pick
from .sessions import BookFront, SessionBook, SessionCache, eos_ids
from .weights import Weights


class StepCore(BookFront):
    """A core whose steps run whole in this thread, one session per forward (in-process members, the
    ce-sequential baseline), made of its `forward` (a row for each session), `advance` (a token from a
    row) and `probs` (a row as a ce distribution): MemberCore's from a model, actors/sim_core.py's
    SimCore's in closed form. The batching engines call the same three."""

    forwards = 0  # forwards run
    rows = 0  # sessions advanced, summed over forwards
    positions = 0  # tokens fed to the model (prefill, catch-up and decode alike)

    def step(self, req: StepRequest) -> StepResult:
        """A whole step in this thread. Same numbers as the batched engine: see MemberCore.forward."""
        s = self.book.begin(req)
        if self.book.full(s) and (req.steps or req.distribution):
            return StepResult(finish="length")  # never a forward past max_position_embeddings
        if req.distribution:
            return StepResult(probs=self.probs(self.forward([s])[0]), forwards=1)
        tokens: list[int] = []
        pieces: list[bytes] = []
        finish = ""
        forwards = 0
        while len(tokens) < req.steps:
            if self.book.full(s):
                finish = "length"
                break
            forwards += 1
            more = len(tokens) + 1 < req.steps
            if (out := self.advance(s, self.forward([s])[0], req.sampling, req.first_step + len(tokens), more)) is None:
                continue  # token healing kept the word's end: this step samples again
            token, piece, finish = out
            tokens.append(token)
            pieces.append(piece)
            if finish:
                break
        return StepResult(tokens, pieces, finish, forwards=forwards)

    def whole(self, req: StepRequest) -> StepResult:
        """The step as one reply: in this process `step` already is one."""
        return self.step(req)

    def stats(self) -> dict:
        return {"forwards": self.forwards, "rows": self.rows, "positions": self.positions,
                "evictions": self.book.evictions}

    def release(self, session: str, keep: bool = False) -> bool:
        return self.book.release(session, keep)


class MemberCore(StepCore):
    """One model and its sessions' book. The book's `begin` applies a step request's delta, `forward`
    runs any number of sessions in one packed model call, `advance` samples a session's next token
    from its row: the batching engine (actors/engine.py) and StepCore's whole-run `step` are both
    made of these."""

    def __init__(self, name: str, source: ModelSource, dtype: str = "auto", threads: int = 1,
                 max_sessions: int | None = None, max_cached_tokens: int | None = None,
                 batch_invariant: bool = False, weights: Weights | None = None):
        """`weights`: the base and adapters this core shares with the other members of its group
        (actors/group.py); by default its own."""
        self.weights = weights or Weights(source, dtype, threads)
        self.model, self.device = self.weights.model, self.weights.device
        self.adapter = self.weights.adapter(source)  # the route of this member's rows (actors/lora.py)
        tokenizer = self.weights.tokenizer
        self.book = SessionBook(name, tokenizer, eos_ids(self.model.generation_config.eos_token_id, tokenizer),
                                int(getattr(self.model.config, "max_position_embeddings", 1 << 20)),
                                max_sessions, max_cached_tokens)
        self.batch_invariant = batch_invariant

    def advance(self, s: SessionCache, logp: torch.Tensor, sampling, step: int,
                more: bool) -> tuple[int, bytes, str] | None:
        """Sample step `step` from this session's row of log-probs and take it into the log
        (SessionBook.accept: its piece, and why the run ends; None when token healing kept the word's
        end, and the caller samples the same step again after feeding it). `more`: the run wants
        tokens after this one."""
        heal, allowed = self.book.healing(s)
        if allowed is not None:
            mask = torch.full_like(logp, float("-inf"))
            mask[allowed] = 0.0
            logp = logp + mask
        token = pick(logp, sampling, step)
        out = self.book.accept(s, token, heal, more)
        return None if out is None else (token, *out)

    def probs(self, logp: torch.Tensor):
        """A row of log-probs as a ce distribution: probabilities (vocab,) float32."""
        return logp.exp().numpy()

    @torch.inference_mode()
    def forward(self, rows: list[SessionCache], routes: list[int] | None = None) -> torch.Tensor:
        """Feed every row's uncached tail in one packed model call; next-token log-probs (rows, vocab).
        `routes`: each row's adapter (actors/lora.py), where rows of a group's members share the call;
        by default this member's.

        Each session attends only to itself (actors/packed.py). With batch_invariant every matrix
        product has the same shape (actors/invariant.py) and each query attends alone, so a session's
        numbers are the same alone, in any batch, or replayed in one prefill."""
        spans, ids, positions, last, route = [], [], [], [], []
        for i, s in enumerate(rows):
            if s.cached == len(s.ids):
                s.cached -= 1  # everything is cached but we need the last position's logits again
            tail = s.ids[s.cached :]
            spans.append(packed.Span(s.kv, s.cached, len(ids), len(tail)))
            positions.extend(range(s.cached, len(s.ids)))
            ids.extend(tail)
            last.append(len(ids) - 1)
            route.extend([routes[i] if routes else self.adapter] * len(tail))
        logp = self._logp(spans, ids, positions, last, route)
        self.rows += len(rows)
        self.positions += len(ids)
        for s in rows:
            s.cached = len(s.ids)
        return logp

    @torch.inference_mode()
    def score(self, ids: list[int], top: int = 0, rows: bool = False) -> Scores:
        """Teacher-forced log-probs of ids[1:], each given the ids before it (echo, logprobs), in one
        forward that touches no session. `rows`: every position's whole row, for a mixture."""
        if len(ids) > self.book.context_length:  # positions past max_position_embeddings mean nothing
            raise InputRefused(f"{len(ids)} tokens to score; the context is {self.book.context_length}")
        logp = self._logp([packed.Span(packed.KV(), 0, 0, len(ids))], ids, list(range(len(ids))),
                          list(range(len(ids) - 1)), self.adapter)  # (L-1, vocab)
        targets = torch.tensor(ids[1:], dtype=torch.long)
        chosen = logp.gather(1, targets[:, None])[:, 0]  # (L-1,)
        if rows:
            return Scores(chosen.numpy(), rows=logp.numpy())
        best = logp.topk(min(top, self.book.vocab_size), dim=-1)  # (L-1, top) each
        return Scores(chosen.numpy(), best.indices.numpy(), best.values.numpy())

    def _logp(self, spans: list, ids: list[int], positions: list[int], keep: list[int],
              route: int | list[int]) -> torch.Tensor:
        """One packed model call, each token through its adapter; log-probs (len(keep), vocab) at `keep`."""
        with packed.packing(tuple(spans), per_query=self.batch_invariant), lora.routing(route, self.device), \
                invariant.tiles() if self.batch_invariant else contextlib.nullcontext():
            out = self.model(input_ids=torch.tensor([ids], device=self.device),
                             position_ids=torch.tensor([positions], device=self.device), use_cache=False,
                             logits_to_keep=torch.tensor(keep, device=self.device))
        self.forwards += 1
        logits = out.logits[0, :, : self.book.vocab_size].float()
        return torch.log_softmax(logits, dim=-1).cpu()

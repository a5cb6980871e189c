"""A fake member behind the real interface (actors/protocol.py's Member), for router tests in
milliseconds (Ray Serve LLM's mock engine idea). Tokens are bytes (id = byte value, EOS = 256); the
next-token distribution is a fixed function of (member, last token), so the exact mixture is known. It
records every delta it is sent.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from mixserve.actors.messages import MemberInfo, Scores, SessionLost, StepRequest, StepResult
from mixserve.actors.sampling import pick
from mixserve.config import parse_config
from mixserve.router.clients import LocalMember
from mixserve.router.router import Router

EOS = 256
VOCAB = 257


class FakeCore:
    def __init__(self, name: str, tokenizer: str = "bytes", eos_weight: float = 0.0, missing_bytes=(),
                 context: int = 1 << 16):
        self.name = name
        self.context = context
        self.missing_bytes = tuple(missing_bytes)
        self.tokenizer = tokenizer
        self.eos_weight = eos_weight
        self.sessions: dict[str, list[int]] = {}
        self.held: dict[str, list[int]] = {}  # named sessions between turns (release with keep)
        self.received: list[tuple[str, list]] = []  # (session, delta segments) per step call
        self.heal: list[bool] = []  # the token-healing flag of each step call

    def info(self) -> MemberInfo:
        return MemberInfo(self.name, self.tokenizer, VOCAB, self.context, (EOS,), self.missing_bytes)

    def prompt_ids(self, prompt=None, messages=None) -> list[int]:
        text = prompt if messages is None else "".join(m["content"] for m in messages)
        return list(text.encode())

    def pieces(self) -> list[bytes]:
        return [bytes([i]) for i in range(256)] + [b""]

    def logp(self, last: int) -> torch.Tensor:
        seed = int.from_bytes(hashlib.sha256(f"{self.name}:{last}".encode()).digest()[:8], "little")
        logits = torch.from_numpy(np.random.default_rng(seed).normal(0, 3, VOCAB))
        logits[EOS] = np.log(self.eos_weight) if self.eos_weight > 0 else -np.inf
        return torch.log_softmax(logits, dim=-1)

    def step(self, req: StepRequest) -> StepResult:
        if req.fresh:
            self.sessions[req.session] = []
        elif req.session in self.held:
            self.sessions[req.session] = self.held.pop(req.session)
        elif req.session not in self.sessions:
            raise SessionLost(req.session)
        ids = self.sessions[req.session]
        self.received.append((req.session, list(req.delta)))
        self.heal.append(req.heal)
        for seg in req.delta:
            ids.extend(seg.ids if seg.text is None else seg.text)
        if req.distribution:
            return StepResult(probs=self.logp(ids[-1]).exp().float().numpy(), forwards=1)
        tokens: list[int] = []
        for t in range(req.first_step, req.first_step + req.steps):
            token = pick(self.logp(ids[-1]), req.sampling, t)
            ids.append(token)
            tokens.append(token)
            if token == EOS:
                break
        pieces = [b"" if t == EOS else bytes([t]) for t in tokens]
        return StepResult(tokens, pieces, "eos" if tokens[-1:] == [EOS] else "", forwards=len(tokens))

    def whole(self, req: StepRequest) -> StepResult:
        return self.step(req)  # in the router's process, step already answers whole

    def score(self, ids: list[int], top: int = 0, rows: bool = False) -> Scores:
        logp = torch.stack([self.logp(t) for t in ids[:-1]]).float()  # (L-1, vocab)
        chosen = logp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].numpy()
        if rows:
            return Scores(chosen, rows=logp.numpy())
        best = logp.topk(top, dim=-1)
        return Scores(chosen, best.indices.numpy(), best.values.numpy())

    def release(self, session: str, keep: bool = False) -> bool:
        if keep and session in self.sessions:
            self.held[session] = self.sessions[session]
        return self.sessions.pop(session, None) is not None

    def live_sessions(self) -> int:
        return len(self.sessions)

    def stats(self) -> dict:
        return {"steps": len(self.received)}


def fake_router(cores: dict[str, FakeCore], weights: dict[str, float], store=None, **keys) -> Router:
    """A router over fake members, built as build_ensemble builds one: from a config (these members'
    weights and any top-level `keys`) and the members' infos."""
    members = [{"name": m, "model": m, "weight": w} for m, w in weights.items()]
    config = parse_config({"members": members, **keys}, resolve_models=False)
    return Router(config, {m: LocalMember(c) for m, c in cores.items()}, {m: c.info() for m, c in cores.items()},
                  store=store)

"""The simulated member engine (engine sim, docs/configuration.md "Engines"): the transformers engine's
continuous batching (actors/engine.py) over a core with no model (actors/sim_core.py), whose forward is
a clock. It is how the control plane is measured past this machine: a sim member costs almost no CPU,
so tens of member replicas and several routers run on 2 cores.

Each tick takes every ready session up to max_batch (the rest wait their turn, round robin), lasts
step_ms + per_seq_ms × the sessions in it, and gives each session one token. A session with more than
one token to catch up on (its prompt, or what other members wrote since its last run) catches up and
samples in the same tick, as a real engine's forward over the delta gives the next token's row (the
transformers engine's batch, vLLM's chunked prefill); its prefill counts as one more session in the
tick's cost, whatever the delta's length. Tokens are the core's: the same seed gives the same text
whatever the batch (docs/architecture.md invariant 3).
"""
from __future__ import annotations

import time

from mixserve.sim import DEFAULTS

from .engine import MemberEngine
from .sessions import SessionCache
from .sim_core import SimCore


class SimEngine(MemberEngine):
    core_class = SimCore

    def __init__(self, max_batch: int = 16, **core_args):
        super().__init__(max_batch, **core_args)
        sim = {**DEFAULTS, **(core_args.get("sim") or {})}
        self.step_ms, self.per_seq_ms = sim["step_ms"], sim["per_seq_ms"]

    def _forward(self, caches: list[SessionCache]) -> list[int]:
        """One tick, asleep in the engine's thread where a model's forward would compute: no CPU, and
        the actor's loop keeps answering."""
        catching_up = sum(len(s.ids) - s.cached > 1 for s in caches)
        tick = (self.step_ms + self.per_seq_ms * (len(caches) + catching_up)) / 1000
        time.sleep(tick)
        self.compute_s += tick
        return self.core.forward(caches)

"""The simulated member engine (engine sim, docs/configuration.md "Engines"): the transformers engine's
continuous batching (actors/engine.py) over a core with no model (actors/sim_core.py), whose forward is
a clock. It is how the control plane is measured past this machine: a sim member costs almost no CPU,
so tens of member replicas and several routers run on 2 cores.

Each tick takes every ready session up to max_batch (the rest wait their turn, round robin), lasts
step_ms + per_seq_ms × the sessions in it, and gives each session one token. A session with more than
one token to catch up on (its prompt, or what other members wrote since its last run) spends its
tick catching up and samples on the next: one tick however long the delta, as a catch-up over a few
tokens costs about one decode on the bench's members (docs/performance.md). Tokens are the core's:
the same seed gives the same text whatever the batch (docs/architecture.md invariant 3).
"""
from __future__ import annotations

import time

from mixserve.sim import DEFAULTS

from .batching import Job
from .engine import MemberEngine
from .messages import StepResult
from .sessions import SessionCache
from .sim_core import SimCore


class SimEngine(MemberEngine):
    core_class = SimCore

    def __init__(self, max_batch: int = 16, **core_args):
        super().__init__(max_batch, **core_args)
        sim = {**DEFAULTS, **(core_args.get("sim") or {})}
        self.step_ms, self.per_seq_ms = sim["step_ms"], sim["per_seq_ms"]

    def _forward(self, caches: list[SessionCache]) -> list[int | None]:
        """One tick, asleep in the engine's thread where a model's forward would compute: no CPU, and
        the actor's loop keeps answering. A session catching up gets no row (None)."""
        tick = (self.step_ms + self.per_seq_ms * len(caches)) / 1000
        catching_up = [len(s.ids) - s.cached > 1 for s in caches]
        time.sleep(tick)
        self.compute_s += tick
        rows = iter(self.core.forward([s for s, up in zip(caches, catching_up) if not up]))
        for s in caches:
            s.cached = len(s.ids)
        return [None if up else next(rows) for up in catching_up]

    def _advance(self, job: Job, row: int | None) -> None:
        if row is not None:
            return super()._advance(job, row)
        if job.req.steps == 0 and not job.req.distribution:  # an eager sync asks only to catch up
            return self._finish(job, StepResult())
        job.forwards += 1

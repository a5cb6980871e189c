"""The member interface as a type: what the router calls on a member (docs/architecture.md, "member").

Two types: `Member`, the calls every member answers, and `MemberActor`, a member as a Ray actor, which
adds the calls that open and watch its data plane. Every engine's actor is a MemberActor
(mixserve/engines.py lists them: MemberEngine, VllmEngine); the cores that stand in for a member in the
router's process (MemberCore, the tests' FakeCore) are Members. This is the interface's one
definition: tests/actors/test_protocol.py holds every implementation to it, call for call.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from .messages import MemberInfo, Scores, StepRequest, StepResult


class Member(Protocol):
    """A member's methods, as the router sees them.

    An implementation may define any of them as `async def` (an async generator for `step`): a Ray
    actor's caller awaits a plain and an async method alike. A core called in the router's process
    (router/clients.py's LocalMember) answers `step` whole, with one StepResult, as `whole` does.
    """

    def info(self) -> MemberInfo:
        """Who the member is: its tokenizer's fingerprint, vocabulary, context length, end tokens.
        The router asks once, when the member has loaded."""

    def prompt_ids(self, prompt: str | None = None, messages: list[dict] | None = None) -> list[int]:
        """A prompt in the member's own tokens; a chat through the member's own chat template."""

    def pieces(self) -> list[bytes]:
        """Each token id's bytes: under ce the router samples from the mixture and needs the text."""

    def step(self, req: StepRequest) -> AsyncIterator[StepResult]:
        """Append the request's delta to its session, then decode its run of `steps` tokens, streamed
        as they are sampled (or, with `distribution`, return the next-token distribution). Raises
        SessionLost for a session the member does not hold unless the request is `fresh`."""

    def whole(self, req: StepRequest) -> StepResult:
        """The same step as one reply, for steps with one part (a ce distribution, a one-token run):
        a plain call's reply costs less than a stream's item."""

    def release(self, session: str, keep: bool = False) -> bool:
        """Forget the session and end its run if one is going; whether the member held it. `keep`
        (a named session between turns) holds its log and KV for its next turn instead, bounded and
        not live (actors/sessions.py's `held`)."""

    def live_sessions(self) -> int:
        """Sessions the member holds (nothing leaks: docs/architecture.md invariant 7)."""

    def score(self, ids: list[int], top: int = 0, rows: bool = False) -> Scores:
        """Teacher-forced log-probs of ids[1:], each given the ids before it (echo and logprobs), with
        the `top` most likely ids at each position, or every position's whole row (`rows`)."""

    def stats(self) -> dict:
        """Counters for metrics, tests and the bench; a member actor's hold `compute_s` (seconds spent
        computing), `pid` (its process) and `busy` (sessions with a run in progress: a pool's load, cluster/autoscale.py)."""


class MemberActor(Member, Protocol):
    """A member as a Ray actor: the Member calls, and its data plane's (actors/dataplane.py). The router
    opens the plane once per process and holds `watch` open to learn at once when the process dies."""

    def data_plane(self, key: bytes, router_ip: str, host: str | None = None) -> str:
        """The member's data plane address, opened on the first call of each process: `key` is the
        deployment's (CurveZMQ), `host` where to listen (by default loopback when the router is on this
        node, else the node's IP)."""

    def data_plane_stats(self) -> dict:
        """Calls in progress on the data plane and runs opened ahead still waiting for their turn."""

    def data_plane_trace(self) -> list[tuple]:
        """The last runs' (session, first step, frame in, first token out), wall clock (the bench)."""

    def watch(self) -> None:
        """Never answers: the router holds this call open, and Ray fails it when the process dies."""

"""The protocol-neutral ingress: authentication, admission, the request's deadline and metrics around
the router. HTTP (mixserve/serving/openai_http.py) and gRPC (mixserve/serving/grpc_service.py) are thin
translations on top of it."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

from mixserve.actors.mailbox import Mailbox
from mixserve.router.request import GenerateRequest, Plan, RequestError
from mixserve.router.result import GenerateResult, final
from mixserve.router.router import Router
from mixserve.router.session_log import Chunk

from .admission import Admission, OverloadedError, work
from .keys import ApiKeys, UnauthorizedError

# Chunks the router may be ahead of a slow client by: past it the request waits for the client
# instead of piling its text up in this replica's memory, and its deadline runs on.
CHUNKS_AHEAD = 64


class DeadlineError(RequestError):
    status = 504
    code = "request_timeout"


class EnsembleService:
    def __init__(self, router: Router, metrics=None):
        self.config = config = router.config
        self.router = router
        self.metrics = metrics
        self.admission = Admission(config.max_concurrent_sessions, config.max_concurrent_tokens)
        self.keys = ApiKeys.from_config(config)  # a key variable named but empty stops the server here

    def authorize(self, authorization: str | None) -> str:
        """`authorization` is the raw header / metadata value: "Bearer KEY". The caller's owner id."""
        try:
            return self.keys.owner(authorization)
        except UnauthorizedError:
            self._reject("unauthorized")
            raise

    def models(self) -> list[dict]:
        """The ensemble first, then each member: a client may ask for one member by name."""
        ensemble = {"id": self.config.model_name, "method": self.config.method, "weights": self.config.weights}
        # Members with the same tokenizer fingerprint share token ids (token-id prompts, the ensemble's log-probs).
        return [ensemble] + [{"id": m.name, "model": m.model, "weight": m.weight,
                              "tokenizer": self.router.infos[m.name].tokenizer} for m in self.config.members]

    def validate(self, req: GenerateRequest, owner: str = "") -> Plan:
        """The request checked, once (the router's validate), for the caller `authorize` named; a
        refusal is counted."""
        try:
            return replace(self.router.validate(req), owner=owner)
        except RequestError as e:
            self._reject(str(e.status))
            raise

    async def stream(self, plan: Plan) -> AsyncIterator[Chunk | GenerateResult]:
        """The plan's chunks, then its result. It runs in a task of its own, ahead of the reader by
        up to CHUNKS_AHEAD chunks, for request_timeout_s at most: then it ends, its sessions and
        admission freed at once, and the reader gets what was sent ahead, then a DeadlineError. A
        reader that stops reading thus holds the service no longer than that."""
        try:
            held = self.admission.admit(plan.n, work(plan))
        except OverloadedError:
            self._reject("overloaded")
            raise
        self._gauge()
        arrived: Mailbox = Mailbox(bound=CHUNKS_AHEAD)
        running = asyncio.create_task(self._run(plan, arrived))

        def ended(_) -> None:  # a done callback: it runs even for a task cancelled before it started
            held.release()
            self._gauge()

        running.add_done_callback(ended)
        try:
            async for item in arrived:
                if isinstance(item, GenerateResult) and self.metrics:
                    self.metrics.delivered(item.usage.member_tokens)
                yield item
        except RequestError as e:
            self._reject(str(e.status))
            raise
        finally:
            running.cancel()  # a reader gone: the router's stream closes, its sessions are freed
            await asyncio.gather(running, return_exceptions=True)

    async def _run(self, plan: Plan, arrived: Mailbox) -> None:
        timeout_s = self.config.request_timeout_s
        try:
            await asyncio.wait_for(arrived.pour(self.router.stream(plan)), timeout_s)
        except asyncio.TimeoutError:  # pour raises nothing itself: this is the deadline
            arrived.fail(DeadlineError(
                f"the request ran past request_timeout_s ({timeout_s:g} s): its client read too slowly or it "
                f"generates too much; its sessions are freed"))

    async def generate(self, plan: Plan) -> GenerateResult:
        return await final(self.stream(plan))

    async def health(self, timeout_s: float = 1.5) -> tuple[dict[str, int] | None, dict[str, int]]:
        """(sessions held per member on the replicas that answered, or None when some member has no
        replica answering: the service cannot serve it; replicas not answering, per member). A pool
        that lost one replica still serves on its siblings."""
        census = await self.router.census(timeout_s)
        live = {m: held for m, (held, _, _) in census.items()}
        down = {m: missing for m, (_, missing, _) in census.items()}
        serving = all(missing < size for _, missing, size in census.values())
        return (live if serving else None), down

    async def live_sessions(self, timeout_s: float = 2.0) -> dict[str, int] | None:
        """Sessions held per member, or None when a member does not answer (the service is degraded)."""
        try:
            return await asyncio.wait_for(self.router.live_sessions(), timeout_s)
        except Exception:  # noqa: BLE001 - any member that cannot answer makes the service degraded
            return None

    def _reject(self, reason: str) -> None:
        if self.metrics:
            self.metrics.rejected.inc(1, {"reason": reason})

    def _gauge(self) -> None:
        if self.metrics:
            self.metrics.active.set(self.admission.active)

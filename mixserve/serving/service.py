"""The protocol-neutral ingress: authentication, admission and metrics around the router. HTTP
(mixserve/serving/openai_http.py) and gRPC (mixserve/serving/grpc_service.py) are thin translations on top of it."""
from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import AsyncIterator
from contextlib import aclosing

from mixserve.router.request import GenerateRequest, Plan, RequestError
from mixserve.router.result import GenerateResult, final
from mixserve.router.router import Router
from mixserve.router.session_log import Chunk

from .admission import Admission, OverloadedError


class UnauthorizedError(RequestError):
    status = 401
    code = "invalid_api_key"


class EnsembleService:
    def __init__(self, router: Router, metrics=None):
        self.config = config = router.config
        self.router = router
        self.metrics = metrics
        self.admission = Admission(config.max_concurrent_sessions)
        self.api_key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""

    def authorize(self, authorization: str | None) -> None:
        """`authorization` is the raw header / metadata value: "Bearer KEY"."""
        if not self.api_key:
            return
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            self._reject("unauthorized")
            raise UnauthorizedError("missing or wrong API key: send `Authorization: Bearer <key>`")

    def models(self) -> list[dict]:
        """The ensemble first, then each member: a client may ask for one member by name."""
        ensemble = {"id": self.config.model_name, "method": self.config.method, "weights": self.config.weights}
        # Members with the same tokenizer fingerprint share token ids (token-id prompts, the ensemble's log-probs).
        return [ensemble] + [{"id": m.name, "model": m.model, "weight": m.weight,
                              "tokenizer": self.router.infos[m.name].tokenizer} for m in self.config.members]

    def validate(self, req: GenerateRequest) -> Plan:
        """The request checked, once (the router's validate); a refusal is counted."""
        try:
            return self.router.validate(req)
        except RequestError as e:
            self._reject(str(e.status))
            raise

    async def stream(self, plan: Plan) -> AsyncIterator[Chunk | GenerateResult]:
        try:
            with self.admission.hold(plan.n):
                self._gauge()
                async with aclosing(self.router.stream(plan)) as items:
                    async for item in items:
                        if isinstance(item, GenerateResult) and self.metrics:
                            self.metrics.delivered(item.usage.member_tokens)
                        yield item
        except OverloadedError:
            self._reject("overloaded")
            raise
        except RequestError as e:
            self._reject(str(e.status))
            raise
        finally:
            self._gauge()

    async def generate(self, plan: Plan) -> GenerateResult:
        return await final(self.stream(plan))

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


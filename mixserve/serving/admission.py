"""Backpressure: a fixed number of concurrent sessions; past it a request is refused at once (429 /
RESOURCE_EXHAUSTED), never queued without bound."""
from __future__ import annotations

from contextlib import contextmanager

from mixserve.router.request import RequestError


class OverloadedError(RequestError):
    status = 429


class Admission:
    def __init__(self, max_sessions: int):
        self.max_sessions = max_sessions
        self.active = 0

    @contextmanager
    def hold(self, sessions: int):
        """Reserve `sessions` slots (a request's n) for the duration of the block."""
        if self.active + sessions > self.max_sessions:
            raise OverloadedError(
                f"server is at its limit of {self.max_sessions} concurrent sessions "
                f"({self.active} active, this request needs {sessions}); retry shortly")
        self.active += sessions
        try:
            yield
        finally:
            self.active -= sessions

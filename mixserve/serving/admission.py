"""Backpressure (docs/architecture.md, "ingress"): a request is admitted only while the sessions and the
work in flight stay under the config's bounds; past either it is refused at once (429 /
RESOURCE_EXHAUSTED), never queued without bound.

Work is counted in tokens, as n x (prompt + max_tokens): what a request can make its members compute
and hold in their caches. Sessions alone let one request with a large n and a long max_tokens take
the whole server. The prompt is measured before it is tokenized (tokenizing is a call to every
member, made after admission): token ids count as given; text and chat contents count their UTF-8
bytes, past which a byte-level tokenizer makes no tokens but a start token and a chat template's
own. A continued session counts only what it adds (its log is in its snapshot)."""
from __future__ import annotations

from mixserve.router.request import Plan, RequestError


class OverloadedError(RequestError):
    status = 429


def work(plan: Plan) -> int:
    """The tokens a plan is counted for: n x (its prompt's size + max_tokens)."""
    if isinstance(plan.prompt, list):
        prompt = len(plan.prompt)
    elif isinstance(plan.prompt, str):
        prompt = len(plan.prompt.encode())
    else:
        prompt = sum(len(m["content"].encode()) for m in plan.messages or ())
    return plan.n * (prompt + plan.params.max_tokens)


class Held:
    """One admitted request's share; released once, by whichever end of the request comes first."""

    def __init__(self, admission: Admission, sessions: int, tokens: int):
        self.admission, self.sessions, self.tokens = admission, sessions, tokens

    def release(self) -> None:
        if self.admission is not None:
            self.admission.active -= self.sessions
            self.admission.tokens -= self.tokens
            self.admission = None


class Admission:
    def __init__(self, max_sessions: int, max_tokens: int):
        self.max_sessions = max_sessions
        self.max_tokens = max_tokens
        self.active = 0  # sessions held by admitted requests
        self.tokens = 0  # their work

    def admit(self, sessions: int, tokens: int) -> Held:
        """Reserve a request's `sessions` (its n) and `tokens` (its work) until the Held is released."""
        if self.active + sessions > self.max_sessions:
            raise OverloadedError(
                f"server is at its limit of {self.max_sessions} concurrent sessions "
                f"({self.active} active, this request needs {sessions}); retry shortly")
        if tokens > self.max_tokens:
            raise OverloadedError(
                f"this request's work is {tokens} tokens (n x (prompt + max_tokens)), past the server's limit "
                f"of {self.max_tokens} concurrent tokens even alone; lower n or max_tokens")
        if self.tokens + tokens > self.max_tokens:
            raise OverloadedError(
                f"server is at its limit of {self.max_tokens} concurrent tokens of work ({self.tokens} held, "
                f"this request needs {tokens}: n x (prompt + max_tokens)); retry shortly")
        self.active += sessions
        self.tokens += tokens
        return Held(self, sessions, tokens)

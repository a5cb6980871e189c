"""`mixserve soak`'s oracle: every answer checked, every error explained (docs/architecture.md
invariants 1, 3, 6, 7).

- A 200 answer's texts equal the same request answered by the quiet server after the soak. Where a
  crash may change the rest of a text (a vLLM member's cut run continues from a fresh seed; a member
  with its own tokenizer re-tokenizes a replayed log in one pass), what the client was sent before
  the crash must still be a prefix of the quiet text, and the change is counted, not failed.
- A stream the client dropped: what it received is a prefix of the quiet text, by the same rule.
- A named session's turn after a turn whose text so changed has no reference: the quiet server
  replays the session's turns on its own texts, the live session holds the changed one. It is
  counted apart (after_a_changed_turn), as the session check after the soak does.
- A hostile request (mixserve/soak/hostile.py) is refused with one of its kind's statuses, or
  answered 200 where its input is legal and then checked as above.
- An error is explained by what the faults and the load did: 429 while the client's own sessions in
  flight filled admission (a gone client's until member_retry_s after it left, while they may still
  wait on a member that is down or silent); 503 naming a member while that member was down or paused for about
  member_retry_s or longer; 500 naming a member while it was being killed; anything at all while the
  router replica was down (counted apart: those clients lost their request). Nothing else.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from . import hostile
from .faults import Fault
from .load import DISCONNECTED, TIMEOUT, TRANSPORT, Outcome

GRACE_S = 1.0  # the server frees a finished request's admission slots just after the client hears the end
LATE_GRACE_S = 3.0  # ... and a dropped or broken one's once it notices
BOUND_SLACK_S = 1.5  # the router gives up a little before member_retry_s (its last backoff step)
MEMBER = re.compile(r"member '([^']+)'")


@dataclass(frozen=True)
class Setup:
    members: dict[str, str]  # name -> tokenizer fingerprint
    engines: dict[str, str]  # name -> engine
    retry_s: float
    max_sessions: int


def used(spec: dict, setup: Setup) -> list[str]:
    if spec["method"] == "single":
        return [spec["member"]]
    weights = spec["weights"]
    return [m for m in setup.members if weights is None or weights.get(m, 0) > 0]


def exact(spec: dict, setup: Setup) -> bool:
    """Whether a crash leaves the text unchanged for this request: transformers members (counter-based
    draws) that share one tokenizer (a replayed log is the same token ids)."""
    names = used(spec, setup)
    return all(setup.engines[m] == "transformers" for m in names) and len({setup.members[m] for m in names}) == 1


def _overlaps(out: Outcome, start: float, end: float | None, slack: float = 0.0) -> bool:
    return out.t0 <= (float("inf") if end is None else end) + slack and start <= out.t1


def _windows(faults: list[Fault], member: str) -> list[tuple[float, float]]:
    """A member's outages (kills, pauses), overlapping ones merged; an unended one runs to infinity."""
    spans = sorted((f.start, float("inf") if f.end is None else f.end) for f in faults
                   if f.target == member and f.kind in ("member_kill", "pause"))
    merged: list[list[float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1] + 0.5:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


class Oracle:
    def __init__(self, setup: Setup, outcomes: list[Outcome], faults: list[Fault], quiet: dict[int, Outcome]):
        self.setup = setup
        self.outcomes = outcomes
        self.faults = faults
        self.quiet = quiet  # spec["i"] -> the quiet server's answer to the same request
        self.verdicts: Counter = Counter()
        self.problems: list[str] = []
        self.changed: set[int] = set()  # turns whose text changed with a crash, and the turns after them

    def judge_all(self) -> Counter:
        for out in sorted(self.outcomes, key=lambda o: o.spec["i"]):  # a turn after the turn it continues
            verdict, why = self.judge(out)
            if verdict in ("changed_after_crash", "after_a_changed_turn"):
                self.changed.add(out.spec["i"])
            out.verdict = verdict
            self.verdicts[verdict] += 1
            if verdict in ("wrong_text", "unexplained"):
                self.problems.append(f"request {out.spec['i']} at {out.t0:.1f}-{out.t1:.1f} s: {verdict}: {why}; "
                                     f"spec {out.spec}")
        return self.verdicts

    def judge(self, out: Outcome) -> tuple[str, str]:
        kind = hostile.BY_NAME.get(out.spec.get("hostile"))
        if kind is not None and out.status != 200 and out.status in kind.expect:
            return "refused_hostile", ""
        if kind is not None and out.status in (400, 413):
            return "unexplained", f"hostile {kind.name}: {out.status} where {sorted(kind.expect)} was due"
        if out.status in (200, DISCONNECTED) and out.spec.get("continues") in self.changed:
            return "after_a_changed_turn", ""
        if out.status == 200:
            return self._text(out, whole=True)
        if out.status == DISCONNECTED:
            return self._text(out, whole=False)
        if out.status == 429 and (held := self._held(out)) + out.spec["n"] > self.setup.max_sessions:
            return "explained_429", ""
        if self._router_down(out):
            return "router_lost", f"{out.status} {out.code}: {out.message[:120]}"
        if out.status == 429:
            return "unexplained", f"429 with {held} sessions of ours held and {out.spec['n']} asked"
        if out.status in (500, 503) and out.code in ("member_error", "member_unavailable", "UNAVAILABLE",
                                                      "INTERNAL"):
            return self._member_error(out)
        return "unexplained", f"{out.status} {out.code}: {out.message[:200]}"

    def _router_down(self, out: Outcome) -> bool:
        return any(_overlaps(out, f.start, f.end, slack=2.0) for f in self.faults if f.kind == "router_kill")

    def _held(self, out: Outcome) -> int:
        """Sessions our other requests may have held while this one was refused: those in flight at
        any moment between its send and its answer (the server may see concurrent sends in another
        order), each until a grace after the client heard its end."""
        held = 0
        for o in self.outcomes:
            if o is out or o.status == 429:
                continue
            if o.status in (200, 400, 404):
                grace = GRACE_S
            elif o.status in (DISCONNECTED, TRANSPORT, TIMEOUT):
                # A client gone while its sessions wait on a member that is down or silent: the router
                # learns it when that wait ends, at most member_retry_s later (seen in the soak).
                grace = self.setup.retry_s + BOUND_SLACK_S + LATE_GRACE_S
            else:
                grace = LATE_GRACE_S
            if o.t0 <= out.t1 and out.t0 <= o.t1 + grace:
                held += o.spec["n"]
        return held

    def _member_error(self, out: Outcome) -> tuple[str, str]:
        match = MEMBER.search(out.message)
        if not match or match.group(1) not in self.setup.members:
            return "unexplained", f"{out.status} names no member: {out.message[:200]}"
        member = match.group(1)
        windows = _windows(self.faults, member)
        if out.status == 503:
            long_enough = [(s, e) for s, e in windows if e - s >= self.setup.retry_s - BOUND_SLACK_S]
            if any(_overlaps(out, s, e, slack=BOUND_SLACK_S) for s, e in long_enough):
                return "explained_503", member
            return "unexplained", f"503 for {member!r} with no outage of {self.setup.retry_s:g} s: {out.message[:160]}"
        kills = [(f.start, f.end) for f in self.faults if f.target == member and f.kind == "member_kill"]
        if any(_overlaps(out, s, e, slack=BOUND_SLACK_S) for s, e in kills):
            return "explained_500", member
        return "unexplained", f"500 for {member!r} with no kill of it: {out.message[:160]}"

    def _text(self, out: Outcome, whole: bool) -> tuple[str, str]:
        spec = out.spec
        quiet = self.quiet.get(spec["i"])
        if quiet is None or quiet.status != 200:
            return "unexplained", f"the quiet server could not answer it again ({quiet and quiet.status})"
        if whole and (problem := self._shape(out)):
            return "wrong_text", problem
        got, want = out.texts, quiet.texts
        if whole and got == want:
            return "ok", ""
        if not whole and len(got) <= len(want) and all(want[j].startswith(got[j]) for j in range(len(got))):
            return "disconnect_ok", ""
        crash = self._first_crash(out)
        if crash is None or exact(spec, self.setup):
            return "wrong_text", f"got {got!r}, the quiet server {want!r}"
        sent = ["".join(text for t, j2, text in out.pieces if j2 == j and t < crash) for j in range(len(want))]
        if all(want[j].startswith(sent[j]) for j in range(len(want))):
            return "changed_after_crash", ""
        return "wrong_text", f"text sent before the crash at {crash:.1f} s changed: {sent!r} vs {want!r}"

    def _shape(self, out: Outcome) -> str:
        spec = out.spec
        if len(out.texts) != spec["n"] or any(f not in ("stop", "length") for f in out.finish):
            return f"{len(out.texts)} choices for n={spec['n']}, finish {out.finish}"
        if spec["logprobs"] is not None and out.logprob_tokens is None:
            return "no logprobs"
        return ""

    def _first_crash(self, out: Outcome) -> float | None:
        names = used(out.spec, self.setup)
        starts = [f.start for f in self.faults if f.kind == "member_kill" and f.target in names
                  and _overlaps(out, f.start, f.end)]
        return min(starts) if starts else None

"""`mixserve soak`'s availability: did clients keep getting answers while faults landed?

Two figures over the fault window (docs/deploy.md, "Reliability"): the whole seconds of it in which no
request completed (answered 200), and the completed requests per second during it against the
warm-up's load, the same offered load without faults. Scale-out (two copies of every part) is for
keeping both near what a quiet server does; one copy of each cannot (a member's kill stops every ME
request for its restart), so the targets decide the verdict only when asked to.
"""
from __future__ import annotations

SILENT_SHARE_MAX = 0.05  # at most this share of the fault window's seconds without a completed request
RATE_RATIO_MIN = 0.7  # completed requests per second during faults, at least this share of the warm-up's


def availability(done: list[float], warmup: tuple[float, float], faults: tuple[float, float],
                 required: bool, router_kills: list[float] = ()) -> dict:
    """`done`: the soak seconds at which requests completed; `warmup` and `faults`: [begin, end) windows;
    `router_kills`: when router replicas were killed (each gets the wait until the next completion)."""
    begin, end = faults
    seconds = int(end - begin)  # the window's whole seconds; a last fraction of one is not judged
    answered = {int(t - begin) for t in done if begin <= t < begin + seconds}
    silent = seconds - len(answered)
    share = silent / seconds if seconds else 1.0
    warm_rate, fault_rate = _rate(done, *warmup), _rate(done, begin, end)
    ratio = fault_rate / warm_rate if warm_rate else None
    met = share <= SILENT_SHARE_MAX and ratio is not None and ratio >= RATE_RATIO_MIN
    return {"window_s": seconds, "seconds_without_completion": silent, "share_without_completion": round(share, 4),
            "warmup_per_s": round(warm_rate, 3), "faults_per_s": round(fault_rate, 3),
            "ratio": None if ratio is None else round(ratio, 3),
            "targets": {"share_without_completion_max": SILENT_SHARE_MAX, "ratio_min": RATE_RATIO_MIN},
            "router_kill_to_next_completion_s": [round(min((t for t in done if t >= k), default=end) - k, 2)
                                                 for k in router_kills],
            "met": met, "required": required}


def _rate(done: list[float], begin: float, end: float) -> float:
    return sum(begin <= t < end for t in done) / (end - begin) if end > begin else 0.0

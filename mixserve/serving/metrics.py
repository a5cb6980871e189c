"""Prometheus metrics through Ray's metrics agent (scraped from each node's metrics port)."""
from __future__ import annotations


class Metrics:
    def __init__(self):
        from ray.util import metrics

        self.tokens = metrics.Counter("mixserve_member_tokens", "Tokens of completed responses, per member "
                                      "(\"mixture\" for ce's).", ("member",))
        # The exported name stays as published (a scraper's queries name it), though it times a run.
        self.run_latency = metrics.Histogram(
            "mixserve_step_latency_s", "Router -> member call latency (one turn), seconds.",
            boundaries=[0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5], tag_keys=("member",))
        self.catch_up = metrics.Counter("mixserve_catch_up_tokens", "Log entries a member caught up on.",
                                        ("member",))
        self.active = metrics.Gauge("mixserve_active_sessions", "Sessions being generated now.")
        self.rejected = metrics.Counter("mixserve_rejected_requests", "Requests refused, per reason.", ("reason",))
        self.replays = metrics.Counter("mixserve_replays", "Sessions replayed into a member that lost them "
                                       "(a restart or an eviction), per member.", ("member",))

    def run(self, member: str, seconds: float, caught_up: int) -> None:
        """One member's run: its call's latency and the log entries it caught up on first."""
        tags = {"member": member}
        self.run_latency.observe(seconds, tags)
        if caught_up:
            self.catch_up.inc(caught_up, tags)

    def delivered(self, member_tokens: dict[str, int]) -> None:
        """Counted when a response completes, so the counter adds up to what the clients were sent."""
        for member, tokens in member_tokens.items():
            self.tokens.inc(tokens, {"member": member})

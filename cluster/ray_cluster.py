"""Start an embedded local Ray, or join an existing cluster."""
from __future__ import annotations

import os

# Ray returns results up to this size inline in the reply; larger ones go through the object store
# (a put, a raylet round trip, a get). A ce step returns a whole next-token distribution, 4 bytes per
# token (196 KiB for a 49k vocabulary, 1 MiB for Gemma's 262k), past Ray's 100 KiB default. Inline,
# two members' distributions cost 2.9 instead of 5.3 ms per step on 2 cores. A joined cluster takes
# it from RAY_max_direct_call_object_size on each node (docs/deploy.md, "Running on a cluster").
INLINE_BYTES = 4 << 20


def connect(address: str | None = None, num_cpus: int | None = None, metrics_port: int | None = None) -> None:
    """Join `address` (auto, HOST:PORT, ray://...) or start a local Ray; no-op if already connected.
    A local Ray exports Prometheus metrics on `metrics_port` (a free port if None)."""
    import ray

    if ray.is_initialized():
        return
    if address is None:
        # A local embedded cluster needs no token; Ray >= 2.60 turns token auth on by default.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        address=address or "local",  # never silently attach to some other cluster on this machine
        num_cpus=num_cpus if address is None else None,
        _metrics_export_port=metrics_port if address is None else None,
        include_dashboard=False,
        logging_level="warning",
        log_to_driver=os.environ.get("MIXSERVE_ACTOR_LOGS") == "1",
        _system_config={"max_direct_call_object_size": INLINE_BYTES} if address is None else None,
    )

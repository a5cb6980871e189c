"""Start an embedded local Ray, or join an existing cluster."""
from __future__ import annotations

import os


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
    )

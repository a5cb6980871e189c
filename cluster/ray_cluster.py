"""Start an embedded local Ray, or join an existing cluster."""
from __future__ import annotations

import os
from contextlib import contextmanager

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
    if address is not None:
        ray.init(address=address, include_dashboard=False, logging_level="warning", log_to_driver=_actor_logs())
        return
    # Ray's own token auth is off unless the environment turns it on (docs/deploy.md, "What the
    # embedded Ray exposes"); Ray >= 2.60 would otherwise turn it on with a token of its own making.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with _loopback():
        ray.init(
            address="local",  # never silently attach to some other cluster on this machine
            num_cpus=num_cpus,
            _metrics_export_port=metrics_port,
            include_dashboard=False,
            logging_level="warning",
            log_to_driver=_actor_logs(),
            _system_config={"max_direct_call_object_size": INLINE_BYTES},
        )


@contextmanager
def _loopback():
    """An embedded Ray on 127.0.0.1 alone: its GCS, raylet, workers and metrics agent listen on loopback,
    not on every interface. Ray takes a node's address from its main interface even when told 127.0.0.1
    (`_node_ip_address`), and takes loopback only where it runs no clusters (its flag for Windows and
    macOS, read when ray is imported, hence set here on the module). Once started, the node's address
    is the node's own; the flag is put back, so that a later join in this process is not held to it."""
    from ray._private import ray_constants

    multinode = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = multinode


def _actor_logs() -> bool:
    return os.environ.get("MIXSERVE_ACTOR_LOGS") == "1"

"""`mixserve bench`'s bare hop: what one message to another process and back costs on each transport,
measured in the same sitting as the methods (docs/architecture.md, "Performance model").

One Ray actor answers both: a plain method (a Ray call, as every step was before the data plane) and a
ZMQ ROUTER socket in a thread of its own that echoes msgpack frames (the data plane's transport). A
round trip of a tiny message, the median of `n`; a switch between members costs at least one.
"""
from __future__ import annotations

import statistics
import threading
import time

import msgpack
import zmq


class Echo:
    def __init__(self):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            peer, frame = self.sock.recv_multipart()
            self.sock.send_multipart([peer, msgpack.packb(msgpack.unpackb(frame))])

    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def ping(self, x: int) -> int:
        return x


def bare_hops(n: int = 400) -> dict[str, float]:
    """Median round trip in ms of a tiny message: {"zmq_ms": ..., "ray_ms": ...}."""
    import ray

    echo = ray.remote(num_cpus=0)(Echo).remote()
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(ray.get(echo.endpoint.remote(), timeout=120))
        zmq_s, ray_s = [], []
        for i in range(n + 20):  # the first 20 of each warm up and are dropped
            started = time.perf_counter()
            sock.send(msgpack.packb(["part", i, None]))
            if not sock.poll(10_000):
                raise RuntimeError("the echo actor's socket did not answer within 10 s")
            sock.recv()
            zmq_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            ray.get(echo.ping.remote(i), timeout=60)
            ray_s.append(time.perf_counter() - started)
        return {"zmq_ms": 1000 * statistics.median(zmq_s[20:]), "ray_ms": 1000 * statistics.median(ray_s[20:])}
    finally:
        ctx.destroy(linger=0)
        ray.kill(echo)

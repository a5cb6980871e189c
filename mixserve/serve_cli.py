"""`mixserve serve`: start (or join) Ray, deploy the app, say where it listens, stay up until Ctrl-C."""
from __future__ import annotations

import shlex
import signal
import threading

from mixserve.cluster.ray_cluster import connect
from mixserve.config import load_config


def serve_forever(config_path: str, host: str, http_port: int, grpc_port: int, address: str | None,
                  metrics_port: int) -> None:
    config = load_config(config_path)  # config mistakes fail here, before Ray starts
    connect(address, metrics_port=metrics_port)
    import ray
    from ray import serve

    from mixserve.router.app import build_app

    serve.start(http_options={"host": host, "port": http_port})
    print(f"loading {len(config.members)} members...", flush=True)
    serve.run(build_app(config, host, grpc_port or None), name="mixserve", route_prefix="/")
    body = f'{{"model": "{config.model_name}", "prompt": "The ocean is", "max_tokens": 32}}'
    print(f"mixserve is up: HTTP http://{host}:{http_port}/v1 (OpenAI-compatible)"
          + (f", gRPC {host}:{grpc_port}" if grpc_port else ""))
    print(f"try: curl -s http://{host}:{http_port}/v1/completions -H 'Content-Type: application/json' "
          f"-d {shlex.quote(body)}")
    if address is None:
        print(f"Prometheus metrics (mixserve_*): http://127.0.0.1:{metrics_port}/metrics")
    print("Ctrl-C to stop.", flush=True)
    stop = threading.Event()
    # Our own handlers: Ray's driver replaces Python's default SIGINT behaviour.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(timeout=1.0):
        pass
    print("shutting down...", flush=True)
    # Drain and delete our app only: serve.shutdown() would stop Serve for a joined cluster's other
    # apps, and its controller's self-kill is reported as a failed task. The embedded Ray (and the
    # Serve instance in it) ends with this driver.
    serve.delete("mixserve")
    ray.shutdown()
    print("stopped.", flush=True)

"""The app on a free loopback port for the length of a block: `mixserve bench`'s me-http row and
`mixserve eval` call it as any client would."""
from __future__ import annotations

import socket
from contextlib import contextmanager

from mixserve.config import EnsembleConfig

_port: int | None = None  # this process's Serve HTTP port: a started Serve keeps its first options


@contextmanager
def served(config: EnsembleConfig):
    """The app on a free loopback port for the block; its base URL. Afterwards only the app is
    deleted: Serve itself ends with the process (serve.shutdown() gets its controller's self-kill
    reported as a failed task on the console)."""
    global _port
    from ray import serve

    from mixserve.serving.app import build_app

    if _port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            _port = sock.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": _port})
    try:
        serve.run(build_app(config, grpc_port=None), name="mixserve", route_prefix="/")
        yield f"http://127.0.0.1:{_port}"
    finally:
        serve.delete("mixserve")

"""The app on a free loopback port for the length of a block: `mixserve bench`'s me-http row and
`mixserve eval` call it as any client would."""
from __future__ import annotations

import socket
from contextlib import contextmanager

from mixserve.config import EnsembleConfig


@contextmanager
def served(config: EnsembleConfig):
    """The app on a free loopback port for the block; its base URL."""
    from ray import serve

    from mixserve.router.app import build_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(config, grpc_port=None), name="mixserve", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()

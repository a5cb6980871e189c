"""Shared fixtures: tiny members made once, one local Ray for the whole run."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import pytest
import yaml

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Set before Ray starts so every worker, the secured ingress included, inherits it: two clients' keys.
os.environ["MIXSERVE_TEST_KEY"] = "sesame,open-sesame"
# Every Ray and Serve the suite starts (its own and the CLIs' in subprocesses) idles at about a
# quarter of this 2-core machine (measured: 28% with three members served); without Ray's metrics
# and with Serve's control loop at 0.5 s instead of 0.1 s, 18%. No test reads Ray's metrics.
os.environ.setdefault("RAY_enable_metrics_collection", "0")
os.environ.setdefault("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.5")
MAX_SESSIONS = 40


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from mixserve.models.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def lora_sources(tiny_dir, tmp_path_factory):
    """Tiny member a as a base and with two LoRA adapters, x and y (resolved sources, as a config gives them)."""
    from mixserve.models.tiny import make_adapter
    from mixserve.references import resolve

    out = tmp_path_factory.mktemp("adapters")
    base = str(tiny_dir / "a")
    return {"base": resolve(base), **{name: resolve(base, adapter=str(make_adapter(base, out / name, seed)))
                                      for name, seed in (("x", 1), ("y", 2))}}


@pytest.fixture(scope="session")
def sim_config(tmp_path_factory):
    """sim.yaml: simulated members a (weight 0.8) and b (0.2), 20 ms + 0.5 ms per session a step, max_batch
    32 (mixserve/models/sim.py); mixserve.models.sim.make_sim writes variants (router replicas, method)."""
    from mixserve.models.sim import make_sim

    return make_sim(tmp_path_factory.mktemp("sim"))


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from mixserve.cluster.ray_cluster import connect

    # Logical CPUs, not cores: members ask for one CPU each and tests keep a few ensembles alive (a
    # member that cannot be placed would wait out its test's timeout: keep the sum under this).
    connect(num_cpus=8)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def ensemble(tiny_dir, ray_local):
    from mixserve.serving.ensemble import build_ensemble

    with build_ensemble(tiny_dir / "ensemble.yaml") as engine:
        yield engine


@pytest.fixture(scope="session")
def hetero(tiny_dir, ray_local):
    from mixserve.serving.ensemble import build_ensemble

    with build_ensemble(tiny_dir / "hetero.yaml") as engine:
        yield engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Server:
    http: str  # base URL, loopback only
    grpc: str  # host:port
    config_path: str


@pytest.fixture(scope="session")
def serve_instance(ray_local):
    from ray import serve

    http_port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    yield f"http://127.0.0.1:{http_port}"
    serve.shutdown()


def _deploy(tiny_dir, serve_instance, name: str, prefix: str, raw: dict) -> Server:
    from ray import serve

    from mixserve.config import load_config
    from mixserve.serving.app import build_app

    path = tiny_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    grpc_port = free_port()
    serve.run(build_app(load_config(path), "127.0.0.1", grpc_port), name=name, route_prefix=prefix)
    return Server(serve_instance + prefix.rstrip("/"), f"127.0.0.1:{grpc_port}", str(path))


@pytest.fixture(scope="session")
def server(tiny_dir, serve_instance):
    """a and b share a tokenizer, c has its own; me across all three by default."""
    # Half a CPU each: the CLI test runs this same config on its own 2-CPU local Ray.
    members = [{"name": m, "model": m, "weight": 1, "resources": {"num_cpus": 0.5}, "batch_invariant": True}
               for m in "abc"]
    return _deploy(tiny_dir, serve_instance, "served", "/",
                   {"members": members, "max_concurrent_sessions": MAX_SESSIONS})


@pytest.fixture(scope="session")
def secure_server(tiny_dir, serve_instance):
    raw = {"members": [{"name": "a", "model": "a", "resources": {"num_cpus": 0.25}}], "model_name": "secure",
           "api_key_env": "MIXSERVE_TEST_KEY"}
    return _deploy(tiny_dir, serve_instance, "secure", "/secure", raw)

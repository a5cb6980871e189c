"""Shared fixtures: tiny members made once, one local Ray for the whole run."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from mixserve.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from mixserve.cluster.ray_cluster import connect

    # Logical CPUs, not cores: members ask for one CPU each and tests keep a few ensembles alive.
    connect(num_cpus=8)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def ensemble(tiny_dir, ray_local):
    from mixserve.api import build_engine

    with build_engine(tiny_dir / "ensemble.yaml") as engine:
        yield engine


@pytest.fixture(scope="session")
def hetero(tiny_dir, ray_local):
    from mixserve.api import build_engine

    with build_engine(tiny_dir / "hetero.yaml") as engine:
        yield engine

"""Placement: config resources become actor options; an unplaceable member is a clear, bounded error."""
import time

import pytest

from mixserve.serving.ensemble import build_ensemble
from mixserve.cluster.placement import actor_options, torch_threads
from mixserve.config import parse_config


def member(tiny_dir, **resources):
    return parse_config({"members": [{"name": "a", "model": "a", "resources": resources}]}, tiny_dir).members[0]


def test_defaults_are_one_cpu_and_one_thread_and_gpus_replace_the_cpu(tiny_dir):
    assert actor_options(member(tiny_dir)) == {"num_cpus": 1, "num_gpus": 0, "resources": {}}
    assert torch_threads(member(tiny_dir)) == 1
    gpu = actor_options(member(tiny_dir, num_gpus=1, member_a=1))
    assert gpu == {"num_cpus": 0, "num_gpus": 1, "resources": {"member_a": 1}}
    assert torch_threads(member(tiny_dir, num_cpus=4)) == 4


def test_a_member_that_cannot_be_placed_fails_clearly_and_in_bounded_time(tiny_dir, ray_local):
    config = parse_config({"members": [
        {"name": "a", "model": "a"},
        {"name": "big", "model": "b", "resources": {"node_with_h100": 1}},
    ], "load_timeout_s": 3}, tiny_dir)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"node_with_h100: members need 1, the cluster has 0"):
        build_ensemble(config)  # an embedded local Ray cannot grow: refused before any actor starts
    # A joined cluster might scale up, so there the wait is bounded by load_timeout_s instead.
    with pytest.raises(RuntimeError, match=r"big needs .*'node_with_h100': 1.*ray status"):
        build_ensemble(config, address="auto")
    assert time.monotonic() - started < 30


def test_members_that_cannot_fit_a_fixed_cluster_fail_at_once(tiny_dir):
    from mixserve.cluster.placement import check_fits

    config = parse_config({"members": [{"name": m, "model": m} for m in "abc"]}, tiny_dir)
    with pytest.raises(RuntimeError, match="CPU: members need 3, the cluster has 2"):
        check_fits(config.members, {"CPU": 2.0})
    check_fits(config.members, {"CPU": 3.0})

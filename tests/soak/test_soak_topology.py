"""`mixserve soak --topology` (mixserve/soak/topology.py): the scaled topology serves the config with
two router replicas and two replicas of each member; the single one serves it as written."""
import json

import pytest
import yaml

from mixserve.models.tiny import soak_config
from mixserve.soak.topology import scaled, served_config


@pytest.fixture
def soak_yaml(tmp_path):
    for name in "abc":  # what the config checks of a model directory: that it holds a config.json
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({}))
    raw = soak_config("transformers")
    raw["members"][0].update(replicas="auto")
    raw["members"][1].update(autoscaling={"min_replicas": 1, "max_replicas": 3, "target_sessions": 4})
    raw["member_replicas"] = 2
    path = tmp_path / "soak.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_scaled_serves_two_router_replicas_and_two_of_each_member(soak_yaml):
    config = served_config(soak_yaml, "scaled")
    assert config.router.replicas == 2 and config.router.autoscaling is None
    assert [(m.name, m.replicas, m.autoscaling) for m in config.members] == [("a", 2, None), ("b", 2, None),
                                                                              ("c", 2, None)]
    assert config.member_replicas is None  # no member left to share it
    # the rest is the config as written: models found beside the file, each member's own keys
    assert config.members[2].source.path == str((soak_yaml.parent / "c").resolve())
    assert config.max_concurrent_sessions == 12 and config.members[0].batch_invariant


def test_single_serves_the_config_as_written(soak_yaml):
    config = served_config(soak_yaml, "single")
    assert config.router.replicas == 1
    assert [m.replicas for m in config.members] == ["auto", 1, 1] and config.members[1].autoscaling.max_replicas == 3
    assert config.member_replicas == 2


def test_the_rewrite_leaves_the_file_s_own_dict_alone():
    raw = soak_config("transformers")
    before = json.dumps(raw)
    out = scaled(raw)
    assert json.dumps(raw) == before
    assert out["router"] == {"replicas": 2} and all(m["replicas"] == 2 for m in out["members"])


def test_an_unknown_topology_is_refused_by_name(soak_yaml):
    with pytest.raises(ValueError, match="single, scaled"):
        served_config(soak_yaml, "triple")

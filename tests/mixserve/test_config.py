"""Config mistakes are named before any actor starts."""
import pytest
import yaml

from mixserve.config import ConfigError, load_config, parse_config


def members(**override):
    base = [{"name": "a", "model": "a", "weight": 1}, {"name": "b", "model": "b", "weight": 3}]
    base[0].update(override)
    return base


def test_weights_normalise_and_paths_resolve_against_the_config_folder(tiny_dir):
    config = load_config(tiny_dir / "ensemble.yaml")
    assert config.weights == {"a": 0.5, "b": 0.5} and config.method == "me"
    assert config.members[0].source.path == str((tiny_dir / "a").resolve())
    assert parse_config({"members": members()}, tiny_dir).weights == {"a": 0.25, "b": 0.75}


@pytest.mark.parametrize("override, message", [
    ({"weight": -1}, r"members\[0\] \(a\)\.weight must be a positive number \(got -1\)"),
    ({"weight": 0}, r"weight must be a positive number"),
    ({"weight": "heavy"}, r"weight must be a positive number \(got 'heavy'\)"),
    ({"model": "nope"}, r"members\[0\] \(a\)\.model: model 'nope' not found"),
    ({"model": "package:llama-9000"}, r"unknown model package 'package:llama-9000'"),
    ({"name": "b"}, r"member names must be unique; used twice: b"),
    ({"dtype": "int3"}, r"dtype must be one of"),
    ({"resources": {"num_gpus": -1}}, r"resources\.num_gpus must be a non-negative number"),
    ({"colour": "red"}, r"unknown keys \['colour'\]"),
])
def test_bad_member_fields_are_named(tiny_dir, override, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"members": members(**override)}, tiny_dir)


@pytest.mark.parametrize("raw, message", [
    ({"members": []}, "members must be a non-empty list"),
    ({"members": members(), "method": "vote"}, r"method must be one of me, ce, single \(got 'vote'\)"),
    ({"members": members(), "default_member": "z"}, "default_member 'z' is not a member"),
    ({"members": members(), "run_length_scheduling": "yes"}, "run_length_scheduling must be true or false"),
    ({"members": members(), "token_healing": 1}, "token_healing must be true or false"),
    ([1, 2], "config must be a mapping"),
])
def test_bad_top_level_fields_are_named(tiny_dir, raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, tiny_dir)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("members: [ {name: a")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    weird = tmp_path / "weird.yaml"
    weird.write_text(yaml.safe_dump({"members": [{"name": "a", "model": str(tmp_path)}]}))
    with pytest.raises(ConfigError, match="has no config.json"):
        load_config(weird)

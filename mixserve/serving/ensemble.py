"""The one way to build an ensemble from a config: the CLI, the server and the tests all call
`build_ensemble`. Members start as Ray actors (or in this process with in_process=True, for tests and
the ce-sequential baseline); the router runs in the caller's process.
"""
from __future__ import annotations

import asyncio
import secrets
import uuid
from pathlib import Path

import torch

from mixserve.actors.host import MemberHost
from mixserve.engines import ENGINES
from mixserve.cluster.placement import actor_options, check_fits, member_args
from mixserve.cluster.ray_cluster import connect
from mixserve.config import EnsembleConfig, load_config
from mixserve.router.dataplane import Channel
from mixserve.router.clients import ChannelMember, LocalMember, RayMember
from mixserve.router.request import GenerateRequest
from mixserve.router.result import GenerateResult
from mixserve.router.router import Router
from mixserve.router.snapshot import STORE_ACTOR, SessionStore


MEMBER_PREFIX = "mixserve_member:"


class Ensemble:
    """A built ensemble: its config, the router over its members, and the member actors it owns (named
    so that neither a member's engine nor the engine table shares the word)."""

    def __init__(self, config: EnsembleConfig, router: Router, actors: dict):
        self.config = config
        self.router = router
        self.actors = actors  # name -> Ray actor handle (empty in process)

    def generate(self, request: GenerateRequest | None = None, **fields) -> GenerateResult:
        """Blocking generate: `ensemble.generate(prompt="Hi", max_tokens=8, seed=1)`."""
        return asyncio.run(self.router.generate(request or GenerateRequest(**fields)))

    def live_sessions(self) -> dict[str, int]:
        return asyncio.run(self.router.live_sessions())

    def close(self) -> None:
        import ray

        for member in self.router.members.values():
            if getattr(member, "channel", None) is not None:
                member.channel.close()
        for actor in self.actors.values():
            ray.kill(actor)
        self.actors = {}

    def __enter__(self) -> Ensemble:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build_ensemble(config: EnsembleConfig | str | Path, *, in_process: bool = False, address: str | None = None,
                 metrics=None) -> Ensemble:
    if not isinstance(config, EnsembleConfig):
        config = load_config(config)
    actors: dict = {}
    if in_process:
        if actors_only := [f"{m.name} runs {m.engine}" for m in config.members if ENGINES[m.engine].core is None]:
            able = ", ".join(name for name, engine in ENGINES.items() if engine.core is not None)
            raise ValueError(f"in-process members run engine: {able}; {', '.join(actors_only)} "
                             f"(start them as Ray actors)")
        cores = {m.name: ENGINES[m.engine].core_class()(**member_args(m)) for m in config.members}
        members = {name: LocalMember(core) for name, core in cores.items()}
        infos = {name: core.info() for name, core in cores.items()}
        store = LocalMember(SessionStore(config.max_stored_sessions))
    else:
        import ray

        connect(address)
        # The router's tensor work is one vocabulary row per ce step: a parallel region costs more than
        # it saves, and idle OpenMP threads spin on the cores the members compute on (measured on 2
        # cores: 11.7 -> 6.0 ms of router CPU per ce token, 30 -> 25 ms per token).
        torch.set_num_threads(1)
        if address is None:
            check_fits(config.members, ray.cluster_resources())
        actors = _start_actors(config)
        # The data plane's key: new for every router (a restarted replica starts its own members), handed
        # to the members over Ray; nothing without it can drive them or read their tokens.
        key = secrets.token_bytes(32)
        members = {name: ChannelMember(actor, Channel(actor, key, config.data_plane_host))
                   if config.data_plane == "zmq" else RayMember(actor) for name, actor in actors.items()}
        infos = _wait_ready(config, actors)
        store = RayMember(session_store(config))
    router = Router(config, members, infos, metrics=metrics, store=store)
    return Ensemble(config, router, actors)


def session_store(config: EnsembleConfig):
    """The session store's actor, started unless running. Detached and named: every router replica
    finds the same snapshots, and they outlive any one. Ray restarts it when its process dies, with
    no snapshots (they live in its memory: the sessions named before are then unknown), and sends a
    call that was in flight again; the router bounds every call to it (router/prompts.py)."""
    import ray

    actor = ray.remote(SessionStore).options(
        name=STORE_ACTOR, namespace="mixserve", get_if_exists=True, lifetime="detached", num_cpus=0,
        max_restarts=-1, max_task_retries=-1,
    ).remote(config.max_stored_sessions)
    # One that was running already (an earlier deployment's) was made with its capacity: set ours.
    ray.get(actor.resize.remote(config.max_stored_sessions), timeout=config.load_timeout_s)
    return actor


def actor_name(member: str) -> str:
    """A member actor's Ray name: the member's, made unique per start (several ensembles, or a
    restarted router replica's, may share a cluster). It is how an operator, `ray list actors` or
    `mixserve soak` tells which process is which member; the actor stays owned by its router."""
    return f"{MEMBER_PREFIX}{member}:{uuid.uuid4().hex[:8]}"


def _start_actors(config: EnsembleConfig) -> dict:
    import ray

    # A crashed member restarts (reloading its weights); the router replays its sessions' logs. An
    # engine's own library (vllm) is imported in its actor's process only.
    remote = ray.remote(max_restarts=config.member_restarts, max_task_retries=0)(MemberHost)
    actors = {}
    for m in config.members:
        actors[m.name] = remote.options(name=actor_name(m.name), **actor_options(m)).remote(
            m.engine, max_batch=m.max_batch, **member_args(m))
    return actors


def _wait_ready(config: EnsembleConfig, actors: dict) -> dict:
    """Every member loaded, or a clear error within load_timeout_s (never a silently pending actor)."""
    import ray

    refs = {actor.info.remote(): name for name, actor in actors.items()}
    ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=config.load_timeout_s)
    infos = {}
    try:
        if pending:
            late = [m for m in config.members if m.name in {refs[r] for r in pending}]
            detail = "; ".join(f"{m.name} needs {actor_options(m)}" for m in late)
            raise RuntimeError(
                f"members not ready after {config.load_timeout_s:.0f} s: {detail}. Either the cluster "
                f"lacks these resources (see `ray status`) or loading is slower than load_timeout_s")
        for ref in ready:
            try:
                infos[refs[ref]] = ray.get(ref)
            except ray.exceptions.RayError as e:
                raise RuntimeError(f"member {refs[ref]!r} failed to start: {e}") from None
    except RuntimeError:
        for actor in actors.values():
            ray.kill(actor)
        raise
    return {m.name: infos[m.name] for m in config.members}

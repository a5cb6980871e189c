"""The one way to build an ensemble from a config: the CLI, the server and the tests all call
`build_ensemble`. Members start as Ray actors, the replicas of each member's pool, owned by the pools'
keeper (cluster/pools.py: this process's own, or the Serve app's Pools deployment to attach to), or in
this process with in_process=True (tests and the ce-sequential baseline); the router runs in the
caller's process.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import torch

from mixserve.engines import ENGINES
from mixserve.groups import units
from mixserve.cluster.placement import check_fits, member_args
from mixserve.cluster.pools import MEMBER_PREFIX, PoolKeeper  # noqa: F401 - MEMBER_PREFIX: the soak finds replicas by it
from mixserve.cluster.sizing import initial_sizes
from mixserve.cluster.ray_cluster import connect
from mixserve.config import EnsembleConfig, load_config
from mixserve.router.dataplane import Channel
from mixserve.router.clients import ChannelMember, LocalMember, RayMember
from mixserve.router.pools import PoolMember, Pools
from mixserve.router.request import GenerateRequest
from mixserve.router.result import GenerateResult
from mixserve.router.router import Router
from mixserve.router.snapshot import STORE_ACTOR, SessionStore



class Ensemble:
    """A built ensemble: its config, the router over its members, and the pools' keeper (cluster/pools.py)
    when this process started it (`owned`: closing the ensemble stops it and its replicas)."""

    def __init__(self, config: EnsembleConfig, router: Router, keeper=None, owned: bool = False):
        self.config = config
        self.router = router
        self.keeper = keeper  # None in process
        self.owned = owned

    @property
    def pools(self) -> dict[str, PoolMember]:
        return self.router.members  # name -> its pool (router/pools.py); in process, a LocalMember

    @property
    def actors(self) -> dict:
        """Each member's first replica's actor (a pool of one: the member), for tests and tools."""
        return {name: pool.actor for name, pool in self.pools.items()} if self.keeper is not None else {}

    def generate(self, request: GenerateRequest | None = None, **fields) -> GenerateResult:
        """Blocking generate: `ensemble.generate(prompt="Hi", max_tokens=8, seed=1)`."""
        return asyncio.run(self.router.generate(request or GenerateRequest(**fields)))

    def live_sessions(self) -> dict[str, int]:
        return asyncio.run(self.router.live_sessions())

    def close(self) -> None:
        import ray

        for pool in self.pools.values():
            for slot in getattr(pool, "slots", {}).values():
                if (channel := getattr(slot.client, "channel", None)) is not None:
                    channel.close()
        if self.owned and self.keeper is not None:
            try:
                ray.get(self.keeper.shutdown.remote(), timeout=30)
            except ray.exceptions.RayError:
                pass
            ray.kill(self.keeper)
        self.keeper = None

    def __enter__(self) -> Ensemble:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build_ensemble(config: EnsembleConfig | str | Path, *, in_process: bool = False, address: str | None = None,
                 metrics=None, keeper=None, view: dict | None = None) -> Ensemble:
    """`keeper`: the pools' keeper to attach to (the Serve app's Pools deployment, with its `view` read);
    by default this process starts its own, whose members close with the ensemble."""
    if not isinstance(config, EnsembleConfig):
        config = load_config(config)
    if in_process:
        if actors_only := [f"{m.name} runs {m.engine}" for m in config.members if ENGINES[m.engine].core is None]:
            able = ", ".join(name for name, engine in ENGINES.items() if engine.core is not None)
            raise ValueError(f"in-process members run engine: {able}; {', '.join(actors_only)} "
                             f"(start them as Ray actors)")
        cores = {m.name: ENGINES[m.engine].core_class()(**member_args(m)) for m in config.members}
        members = {name: LocalMember(core) for name, core in cores.items()}
        infos = {name: core.info() for name, core in cores.items()}
        store = LocalMember(SessionStore(config.max_stored_sessions))
        return Ensemble(config, Router(config, members, infos, metrics=metrics, store=store))
    import ray

    connect(address)
    # The router's tensor work is one vocabulary row per ce step: a parallel region costs more than
    # it saves, and idle OpenMP threads spin on the cores the members compute on (measured on 2
    # cores: 11.7 -> 6.0 ms of router CPU per ce token, 30 -> 25 ms per token).
    torch.set_num_threads(1)
    owned = keeper is None
    if owned:
        if address is None:
            check_fits(_replicated(config), ray.cluster_resources())
        keeper = ray.remote(PoolKeeper).options(num_cpus=0).remote(config)
        try:
            ray.get(keeper.ready.remote(), timeout=config.load_timeout_s + 60)
        except (ray.exceptions.RayTaskError, ray.exceptions.GetTimeoutError) as e:
            ray.kill(keeper)
            raise RuntimeError(str(getattr(e, "cause", None) or e)) from None
    view = view or ray.get(keeper.view.remote(), timeout=config.load_timeout_s)

    def reach(actor, key: bytes):
        # The data plane's key is the keeper's, drawn once for the deployment: every router replica and
        # every restart of a replica use it; nothing without it can drive a member or read its tokens.
        return ChannelMember(actor, Channel(actor, key, config.data_plane_host)) if config.data_plane == "zmq" \
            else RayMember(actor)

    pools = Pools(keeper, view, reach)
    router = Router(config, pools.members, view["infos"], metrics=metrics, store=RayMember(session_store(config)))
    return Ensemble(config, router, keeper, owned)


def _replicated(config: EnsembleConfig) -> list:
    """Every replica's demand, for check_fits: each pool's as often as it starts (a co-located group's
    replica is one actor, placed as its first member says: mixserve/groups.py)."""
    sizes = initial_sizes(config)
    return [group[0] for group in units(config.members, config.colocate).values()
            for _ in range(max(sizes[m.name] for m in group))]


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

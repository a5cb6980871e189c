"""How many copies of each part run (docs/deploy.md, "Scaling out"): the config's `router:` section and
each member's `replicas:` / `autoscaling:`, parsed here beside mixserve/config.py (the config layer).

    router: {replicas: 2}                  # or {autoscaling: {min_replicas: 1, max_replicas: 4,
                                           #                   target_ongoing_requests: 32}}
    member_replicas: 6                     # the replicas that `replicas: auto` members share
    members:
      - {name: a, model: ..., weight: 0.8, replicas: auto}
      - {name: b, model: ..., weight: 0.2, autoscaling: {min_replicas: 1, max_replicas: 4, target_sessions: 16}}

Without these keys everything runs once, as on a laptop: one router replica, one replica per member.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

AUTO = "auto"


class ScalingError(ValueError):
    """A scaling key that is wrong; the config re-raises it as its own ConfigError."""


@dataclass(frozen=True)
class Autoscaling:
    """Replicas between min and max, following `target` units of load per replica: ongoing requests for
    the router (Ray Serve's autoscaling), open sessions for a member pool (cluster/pools.py)."""

    min_replicas: int
    max_replicas: int
    target: float
    upscale_delay_s: float = 5.0  # load above target this long adds replicas
    downscale_delay_s: float = 30.0  # load below target this long removes them (drained first)


@dataclass(frozen=True)
class Scale:
    """A pool's or the routers' size: a fixed count, `auto` (members: a share of member_replicas by
    expected load), or autoscaling."""

    replicas: int | str = 1
    autoscaling: Autoscaling | None = None

    @property
    def initial(self) -> int:
        """Replicas at start (an `auto` pool's count comes from cluster/pools.py's sizes)."""
        if self.autoscaling is not None:
            return self.autoscaling.min_replicas
        return 1 if self.replicas == AUTO else int(self.replicas)


ROUTER_KEYS = {"replicas", "autoscaling"}
AUTOSCALING_KEYS = {"min_replicas", "max_replicas", "upscale_delay_s", "downscale_delay_s"}


def parse_router(raw, where: str = "router") -> Scale:
    if raw is None:
        return Scale()
    if not isinstance(raw, dict):
        raise ScalingError(f"{where} must be a mapping such as {{replicas: 2}}")
    if unknown := sorted(set(raw) - ROUTER_KEYS):
        raise ScalingError(f"{where}: unknown keys {unknown}; known keys: {', '.join(sorted(ROUTER_KEYS))}")
    return _scale(raw.get("replicas", 1), raw.get("autoscaling"), "target_ongoing_requests", where, auto=False)


def parse_pool(raw: dict, where: str) -> Scale:
    """A member's `replicas` and `autoscaling` keys (its other keys are the config's)."""
    return _scale(raw.get("replicas", 1), raw.get("autoscaling"), "target_sessions", where, auto=True)


def parse_total(raw, pools: list[Scale]) -> int | None:
    """`member_replicas`: the replicas the `auto` pools share; required by them, refused without them."""
    autos = sum(p.replicas == AUTO and p.autoscaling is None for p in pools)
    if raw is None:
        if autos:
            raise ScalingError("members with replicas: auto share member_replicas: set it (the replicas of "
                               "those members together, e.g. member_replicas: 8)")
        return None
    if not autos:
        raise ScalingError("member_replicas is shared by members with replicas: auto; none has it")
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < autos:
        raise ScalingError(f"member_replicas must be an integer of at least {autos} (one per auto member; got {raw!r})")
    return raw


def _scale(replicas, autoscaling, target_key: str, where: str, auto: bool) -> Scale:
    if autoscaling is not None:
        if replicas != 1:
            raise ScalingError(f"{where}: give replicas or autoscaling, not both (autoscaling sets the count)")
        return Scale(1, _autoscaling(autoscaling, target_key, f"{where}.autoscaling"))
    if auto and replicas == AUTO:
        return Scale(AUTO)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        also = " or auto" if auto else ""
        raise ScalingError(f"{where}.replicas must be a positive integer{also} (got {replicas!r})")
    return Scale(replicas)


def _autoscaling(raw, target_key: str, where: str) -> Autoscaling:
    if not isinstance(raw, dict):
        raise ScalingError(f"{where} must be a mapping of min_replicas, max_replicas and {target_key}")
    known = AUTOSCALING_KEYS | {target_key}
    if unknown := sorted(set(raw) - known):
        raise ScalingError(f"{where}: unknown keys {unknown}; known keys: {', '.join(sorted(known))}")
    lo, hi = raw.get("min_replicas", 1), raw.get("max_replicas")
    for key, value in (("min_replicas", lo), ("max_replicas", hi)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ScalingError(f"{where}.{key} must be a positive integer (got {value!r})")
    if hi < lo:
        raise ScalingError(f"{where}.max_replicas ({hi}) is below min_replicas ({lo})")
    target = raw.get(target_key)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < math.inf:
        raise ScalingError(f"{where}.{target_key} must be a positive number (got {target!r})")
    delays = {}
    for key in ("upscale_delay_s", "downscale_delay_s"):
        value = raw.get(key, getattr(Autoscaling, key))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise ScalingError(f"{where}.{key} must be a number of seconds >= 0 (got {value!r})")
        delays[key] = float(value)
    return Autoscaling(lo, hi, float(target), **delays)

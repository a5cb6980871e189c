"""Pool sizes from the mixture's weights (docs/deploy.md, "Scaling out"): under ME member i computes a
share λᵢ of the steps, and is switched into (a catch-up forward over what the others wrote) at a rate
λᵢ(1 − λᵢ) per step; under CE every member computes every step; `single` only the default member. A
member's expected load is that share times its step time, and `replicas: auto` members split
`member_replicas` in proportion to it.
"""
from __future__ import annotations

from mixserve.config import EnsembleConfig, MemberConfig
from mixserve.scaling import AUTO

CATCH_UP_STEPS = 0.25  # a catch-up's cost in decode steps (an estimate: a few rows in a batched forward)


def step_ms(member: MemberConfig) -> float:
    """The member's step time as far as the config knows it: a simulated member's own (engine: sim);
    for a real one 1, so that its weight alone sizes it (state the step times through weights' units
    by giving slow members more replicas by hand where they differ)."""
    return float(member.sim.get("step_ms", 1.0)) if member.engine == "sim" else 1.0


def expected_load(config: EnsembleConfig) -> dict[str, float]:
    """Each member's share of the ensemble's compute per generated token, in step-time units."""
    if config.method == "ce":
        return {m.name: step_ms(m) for m in config.members}
    if config.method == "single":
        default = config.default_member or config.members[0].name
        return {m.name: (step_ms(m) if m.name == default else 0.0) for m in config.members}
    # one step of member i, plus a catch-up each time the schedule switches into it: one forward over a
    # run's few tokens, batched with the others' decode steps, so a fraction of a step
    return {m.name: step_ms(m) * (m.weight + CATCH_UP_STEPS * m.weight * (1 - m.weight)) for m in config.members}


def initial_sizes(config: EnsembleConfig) -> dict[str, int]:
    """Replicas each pool starts with: a fixed count as configured, autoscaling's minimum, and the
    `auto` pools' shares of member_replicas by expected load (largest remainder, at least one each)."""
    sizes = {m.name: m.scale.initial for m in config.members}
    autos = [m for m in config.members if m.replicas == AUTO and m.autoscaling is None]
    if not autos:
        return sizes
    load = expected_load(config)
    total = sum(load[m.name] for m in autos) or 1.0
    spare = config.member_replicas - len(autos)  # one each first
    quotas = {m.name: spare * load[m.name] / total for m in autos}
    extra = {name: int(q) for name, q in quotas.items()}
    left = spare - sum(extra.values())
    for name in sorted(quotas, key=lambda n: quotas[n] - extra[n], reverse=True)[:left]:
        extra[name] += 1
    sizes.update({name: 1 + n for name, n in extra.items()})
    return sizes

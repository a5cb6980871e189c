"""Policies decide who computes the next steps; one small file each (SGLang router style)."""
from __future__ import annotations

from mixserve.config import METHODS

from .base import Policy, Turn
from .ce import ConventionalEnsemble
from .me import MixtureEnsemble
from .single import SingleMember


def make_policy(method: str, weights: dict[str, float], member: str | None, seed: int, runs: bool) -> Policy:
    """`weights` are normalised and positive; `member` is the one to use for method single."""
    if method == "me":
        return MixtureEnsemble(weights, seed, runs)
    if method == "ce":
        return ConventionalEnsemble(weights)
    return SingleMember(member)


__all__ = ["METHODS", "Policy", "Turn", "make_policy"]

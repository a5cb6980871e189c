"""One named member for the whole reply: the baseline each ensemble is compared with."""
from __future__ import annotations

from .base import Turn


class SingleMember:
    def __init__(self, member: str):
        self.member = member

    def turn(self, step: int, remaining: int) -> Turn:
        return Turn((self.member,), remaining)

"""How the router reaches a member: a Ray actor, or a core in this process (tests, ce-sequential).

Both expose one awaitable `call(method, *args)`, so the router and every fake behind it are the same.
"""
from __future__ import annotations


class RayMember:
    def __init__(self, actor):
        self.actor = actor

    async def call(self, method: str, *args):
        return await getattr(self.actor, method).remote(*args)


class LocalMember:
    def __init__(self, core):
        self.core = core

    async def call(self, method: str, *args):
        return getattr(self.core, method)(*args)

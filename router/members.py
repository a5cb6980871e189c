"""How the router reaches a member: a Ray actor, or a core in this process (tests, ce-sequential).

Both expose one awaitable `call(method, *args)`, so the router and every fake behind it are the same.
"""
from __future__ import annotations


class MemberDown(Exception):
    """The member's process is gone or restarting; the router retries within its bound."""


class RayMember:
    def __init__(self, actor):
        self.actor = actor

    async def call(self, method: str, *args):
        import ray

        try:
            return await getattr(self.actor, method).remote(*args)
        except ray.exceptions.RayActorError as e:
            raise MemberDown(str(e).splitlines()[0]) from None


class LocalMember:
    def __init__(self, core):
        self.core = core

    async def call(self, method: str, *args):
        return getattr(self.core, method)(*args)

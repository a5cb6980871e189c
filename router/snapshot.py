"""Session snapshots: a session's log in msgpack, kept outside the router process, so that a request
naming the session continues it even on a restarted or different router replica (docs/architecture.md
invariant 1: the log is the truth; members' caches are rebuilt from it)."""
from __future__ import annotations

from collections import OrderedDict

import msgpack

from mixserve.config import CAPACITY

from .request import UnavailableError
from .session_log import Entry

VERSION = 1
STORE_ACTOR = "mixserve_sessions"


class StoreUnavailableError(UnavailableError):
    """The session store did not answer in time (down, or restarting past the bound)."""

    code = "session_store_unavailable"


def stored_name(owner: str, session: str) -> str:
    """A session's name in the store: its owner's id (mixserve/serving/keys.py; "" without keys) and the
    client's name. An owner id holds no "/", so one owner's names never reach another's."""
    return f"{owner}/{session}"


def dump(prompt_ids: dict[str, list[int]], log: list[Entry]) -> bytes:
    # One flat list per field: a 1,000-token log packs to a few kilobytes.
    return msgpack.packb({"v": VERSION, "prompt_ids": prompt_ids, "member": [e.member for e in log],
                          "token": [e.token for e in log], "piece": [e.piece for e in log],
                          "tokenizer": [e.tokenizer for e in log]})


def load(blob: bytes) -> tuple[dict[str, list[int]], list[Entry]]:
    d = msgpack.unpackb(blob)
    if d.get("v") != VERSION:
        raise ValueError(f"session snapshot version {d.get('v')} is not {VERSION}")
    return d["prompt_ids"], [Entry(*row) for row in zip(d["member"], d["token"], d["piece"], d["tokenizer"])]


class SessionStore:
    """Snapshots by stored name, least recently used dropped past `capacity` (the config's
    max_stored_sessions). In a Ray cluster it runs as the named actor mixserve_sessions, shared by
    every router replica; Ray restarts it if its process dies, empty (mixserve/serving/ensemble.py)."""

    def __init__(self, capacity: int = CAPACITY):
        self.capacity = capacity
        self.blobs: OrderedDict[str, bytes] = OrderedDict()
        # Where a session's members hold its KV (router/router.py's `_hold`), taken by its next turn
        # alone: two turns racing on one session cannot both extend the members' copy.
        self.held: dict[str, dict] = {}

    def resize(self, capacity: int) -> None:
        """The named actor outlives deployments: a router that finds it running sets its own config's
        capacity, dropping the least recently used snapshots past a smaller one."""
        self.capacity = capacity
        self._trim()

    def get(self, session: str) -> bytes | None:
        if session in self.blobs:
            self.blobs.move_to_end(session)
        return self.blobs.get(session)

    def put(self, session: str, blob: bytes, held: dict | None = None) -> None:
        self.blobs[session] = blob
        self.blobs.move_to_end(session)
        self.held.pop(session, None)
        if held:
            self.held[session] = held
        self._trim()

    def take(self, session: str) -> tuple[bytes | None, dict | None]:
        """The snapshot, and where its KV is held (taken: the next taker replays)."""
        return self.get(session), self.held.pop(session, None)

    def _trim(self) -> None:
        while len(self.blobs) > self.capacity:
            self.held.pop(self.blobs.popitem(last=False)[0], None)

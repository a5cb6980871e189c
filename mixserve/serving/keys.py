"""API keys (docs/serving.md, "Auth"): who may call, and whose a named session is.

The config's `api_key_env` names an environment variable holding one key, or several separated by
commas (one per client). A variable that is named but unset or empty stops the server: an operator
who names one means to require a key, and an empty one served everyone without a word. With keys,
each client is known by a hash of its key, and a named session belongs to the client that started
it (router/prompts.py keeps it under that owner): another key continuing it finds nothing, the same
404 as for a name that was never used, so a name tells no one whether it exists."""
from __future__ import annotations

import hashlib
import hmac
import os

from mixserve.config import ConfigError, EnsembleConfig
from mixserve.router.request import RequestError


class UnauthorizedError(RequestError):
    status = 401
    code = "invalid_api_key"


class ApiKeys:
    """The keys a server accepts; none configured: everyone is let in, as one anonymous owner ("")."""

    def __init__(self, keys: list[str]):
        # The owner id is a hash, not the key: it is kept in the session store (another process) and
        # in its snapshots' names, where a key must not be.
        self.owners = {key.encode(): hashlib.sha256(key.encode()).hexdigest()[:32] for key in keys}

    @classmethod
    def from_config(cls, config: EnsembleConfig) -> ApiKeys:
        """The keys in the variable the config names, read from this process's environment."""
        if config.api_key_env is None:
            return cls([])
        value = os.environ.get(config.api_key_env)
        keys = [k.strip() for k in (value or "").split(",") if k.strip()]
        if not keys:
            said = "is not set" if value is None else "is empty"
            raise ConfigError(f"api_key_env names {config.api_key_env}, which {said} in the server's environment: "
                              f"set it to the key clients must send (several: comma-separated), or leave "
                              f"api_key_env out to serve without keys")
        return cls(keys)

    def owner(self, authorization: str | None) -> str:
        """The caller's owner id from the raw header or metadata value ("Bearer KEY"), or 401."""
        if not self.owners:
            return ""
        given = (authorization or "").removeprefix("Bearer ").strip().encode()
        # Every key compared in full: how long a refusal takes says nothing of which key came close.
        matches = [owner for key, owner in self.owners.items() if hmac.compare_digest(given, key)]
        if not matches:
            raise UnauthorizedError("missing or wrong API key: send `Authorization: Bearer <key>`")
        return matches[0]

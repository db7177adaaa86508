"""One Redis connection as every Redis backend of headwater opens it.

``redis://host:port/db?prefix=hw``: the prefix namespaces every key a backend writes,
so several deployments (or test runs) can share one server. Driver errors become
headwater's own: an unreachable server is ``BackendUnavailableError`` (callers wait
and retry), anything else the backend's own error type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from headwater._url import redacted
from headwater.errors import BackendError, BackendUnavailableError, MissingDependencyError

__all__ = ["RedisConnection"]

_T = TypeVar("_T")


class RedisConnection:
    """A client for ``url``, its key prefix, and the translation of its errors."""

    def __init__(
        self,
        url: str,
        *,
        what: str,
        error: type[BackendError] = BackendError,
        socket_timeout: float = 30.0,
    ) -> None:
        try:
            import redis
        except ImportError:
            raise MissingDependencyError("redis", "redis", "redis") from None
        self.url = url
        self.what = what
        self.prefix = parse_qs(urlsplit(url).query).get("prefix", ["hw"])[-1]
        self.client: Any = redis.Redis.from_url(
            url.split("?", 1)[0], socket_timeout=socket_timeout, socket_connect_timeout=5
        )
        self.no_script: type[Exception] = redis.exceptions.NoScriptError
        self.watch_error: type[Exception] = redis.exceptions.WatchError
        self._error = error
        self._down = (redis.ConnectionError, redis.TimeoutError)
        self._errors = (redis.RedisError,)

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` with driver errors translated."""
        try:
            return fn()
        except self._down as exc:
            raise BackendUnavailableError(f"Redis at {redacted(self.url)}: {exc}") from exc
        except self._errors as exc:
            raise self._error(f"{self.what} at {redacted(self.url)}: {exc}") from exc

    def persistence(self) -> dict[str, object]:
        """What the server keeps on disk of deleted keys, for an erasure's evidence.

        A deleted key is gone from memory at once; an RDB snapshot or the append-only
        file written before still holds it until the next snapshot or AOF rewrite. This
        reports the server's settings (or that they cannot be read, as on managed
        services that disable ``CONFIG``); rewriting them is the operator's.
        """
        try:
            found = self.client.config_get("save")
            found.update(self.client.config_get("appendonly"))
        except self._errors as exc:
            return {"server_persistence": f"unknown ({exc}); see docs/erasure.md"}
        save = str(found.get("save", "")).strip()
        aof = str(found.get("appendonly", "no")).strip()
        if not save and aof == "no":
            return {"server_persistence": "none: deleted keys exist in memory only"}
        return {
            "server_persistence": "rdb snapshots and/or append-only file",
            "save": save,
            "appendonly": aof,
            "note": "copies written before the erasure remain until the next snapshot or AOF "
            "rewrite (docs/erasure.md)",
        }

    def close(self) -> None:
        """Release the connection pool."""
        self.client.close()

"""One Redis connection as every Redis backend of headwater opens it.

``redis://host:port/db?prefix=hw``: the prefix namespaces every key a backend writes,
so several deployments (or test runs) can share one server. Driver errors become
headwater's own: an unreachable server is ``BackendUnavailableError`` (callers wait
and retry), anything else the backend's own error type.

A Redis Cluster is named by ``redis+cluster://host:port,host:port/?prefix=hw`` (any
of its nodes; the client discovers the others) or by ``redis://host:port?cluster=true``
(``rediss`` for TLS). The client is then redis-py's ``RedisCluster``, which follows
``MOVED``/``ASK`` redirections and refreshes its slot map after a failover. While a
failover is under way (``CLUSTERDOWN``, ``MASTERDOWN``, ``TRYAGAIN``, an uncovered
slot) the error is ``BackendUnavailableError``, like an unreachable server: callers
wait and retry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from headwater._url import redacted
from headwater.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    MissingDependencyError,
)

__all__ = ["RedisConnection", "ReplicaAcks", "cluster_nodes", "is_cluster_url"]

_T = TypeVar("_T")
_TRUE = ("1", "true", "yes", "on")


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``?cluster=true``)."""
    parts = urlsplit(url)
    if parts.scheme.lower() in ("redis+cluster", "rediss+cluster"):
        return True
    return parse_qs(parts.query).get("cluster", ["no"])[-1].lower() in _TRUE


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` startup nodes a cluster URL lists (comma-separated)."""
    netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]
    nodes = []
    for item in filter(None, netloc.split(",")):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "6379")
        try:
            nodes.append((host.strip("[]") or "127.0.0.1", int(port)))
        except ValueError:
            raise ConfigurationError(f"{redacted(url)}: bad node {item!r}") from None
    if not nodes:
        raise ConfigurationError(f"{redacted(url)} names no Redis Cluster node")
    return nodes


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
        #: True when the client is redis-py's cluster client.
        self.cluster = is_cluster_url(url)
        self.client: Any = (
            self._cluster_client(url, socket_timeout)
            if self.cluster
            else redis.Redis.from_url(
                url.split("?", 1)[0], socket_timeout=socket_timeout, socket_connect_timeout=5
            )
        )
        self.no_script: type[Exception] = redis.exceptions.NoScriptError
        self.watch_error: type[Exception] = redis.exceptions.WatchError
        self._error = error
        # A failover in progress answers like an unreachable server: wait and retry.
        self._down: tuple[type[Exception], ...] = (
            redis.ConnectionError,
            redis.TimeoutError,
            redis.exceptions.ClusterDownError,
            redis.exceptions.TryAgainError,
            redis.exceptions.SlotNotCoveredError,
        )
        self._errors: tuple[type[Exception], ...] = (
            redis.RedisError,
            redis.exceptions.RedisClusterException,
        )

    @staticmethod
    def _cluster_client(url: str, socket_timeout: float) -> Any:
        from redis.cluster import ClusterNode, RedisCluster

        parts = urlsplit(url)
        db = parts.path.strip("/")
        if db not in ("", "0"):
            raise ConfigurationError(f"{redacted(url)}: a Redis Cluster has database 0 only")
        try:
            return RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in cluster_nodes(url)],  # type: ignore[no-untyped-call]
                username=unquote(parts.username) if parts.username else None,
                password=unquote(parts.password) if parts.password else None,
                ssl=parts.scheme.lower().startswith("rediss"),
                socket_timeout=socket_timeout,
                socket_connect_timeout=5,
            )
        except redis_errors() as exc:
            raise BackendUnavailableError(f"Redis Cluster at {redacted(url)}: {exc}") from exc

    def primaries(self) -> list[Any]:
        """The nodes to ask for what lives on every master (SCAN): one client, or each
        master of the cluster."""
        if not self.cluster:
            return [None]
        return list(self.client.get_primaries())

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` with driver errors translated (naming the server or cluster)."""
        try:
            return fn()
        except self._down as exc:
            raise BackendUnavailableError(f"{self._where()}: {_describe(exc)}") from exc
        except self._errors as exc:
            raise self._error(f"{self.what} at {redacted(self.url)}: {_describe(exc)}") from exc

    def _where(self) -> str:
        return f"Redis {'Cluster ' if self.cluster else ''}at {redacted(self.url)}"

    def persistence(self) -> dict[str, object]:
        """What the server keeps on disk of deleted keys, for an erasure's evidence.

        A deleted key is gone from memory at once; an RDB snapshot or the append-only
        file written before still holds it until the next snapshot or AOF rewrite. This
        reports the server's settings (or that they cannot be read, as on managed
        services that disable ``CONFIG``); rewriting them is the operator's.
        """
        try:
            if self.cluster:
                # Every node answers; the cluster's setting is the least private one.
                found = _merged(self.client.config_get("save", target_nodes="all"))
                found.update(_merged(self.client.config_get("appendonly", target_nodes="all")))
            else:
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


class ReplicaAcks:
    """Writes to a Redis Cluster master that return once a replica holds them.

    ``?wait=N`` (default 1) and ``?wait_ms=MS`` (default 1000) on the cluster's URL: a
    write's pipeline ends with ``WAIT N MS`` on the same connection, so a master killed
    after the acknowledgement loses none of it when that replica is promoted. Fewer
    acknowledgements than asked raise ``BackendUnavailableError`` (the master holds the
    write; the caller retries an idempotent write). A master with fewer replicas than
    asked (its replica was promoted away and has not rejoined) has nothing more to wait
    for: its count of connected replicas, read with each write, lowers the wait.
    ``?wait=0`` writes without waiting.
    """

    def __init__(self, url: str) -> None:
        query = parse_qs(urlsplit(url).query)
        try:
            self.wait = int(query.get("wait", ["1"])[-1])
            self.wait_ms = int(query.get("wait_ms", ["1000"])[-1])
        except ValueError:
            raise ConfigurationError(f"{redacted(url)}: wait and wait_ms are integers") from None
        if self.wait < 0 or self.wait_ms < 0:
            raise ConfigurationError(f"{redacted(url)}: wait and wait_ms cannot be negative")
        self._url = url
        #: Each master's connected replicas, as its last write found them.
        self._replicas: dict[str, int] = {}

    def execute(
        self, client: Any, node: Any, build: Callable[[Any], object], *, raise_on_error: bool = True
    ) -> list[Any]:
        """The commands ``build`` queues on a pipeline to ``node``, then the wait; the
        commands' answers (exceptions among them when not ``raise_on_error``)."""
        wait = min(self.wait, self._replicas.get(node.name, self.wait))
        pipe = client.get_redis_connection(node).pipeline(transaction=False)
        build(pipe)
        queued = len(pipe)
        if wait:
            pipe.execute_command("WAIT", wait, self.wait_ms)
        if self.wait:
            pipe.execute_command("INFO", "replication")
        answers = pipe.execute(raise_on_error=raise_on_error)
        for extra in answers[queued:]:
            if isinstance(extra, Exception):
                raise extra
        if self.wait:
            self._replicas[node.name] = int(answers[-1].get("connected_slaves", 0))
        # Fewer acknowledgements than asked are a failure only when the master has the
        # replicas to give them (a promoted one may have none yet).
        if wait and int(answers[queued]) < min(wait, self._replicas[node.name]):
            raise BackendUnavailableError(
                f"Redis Cluster at {redacted(self._url)}: {node.name} holds the write, but "
                f"only {answers[queued]} of {wait} replicas acknowledged it within "
                f"{self.wait_ms} ms"
            )
        return list(answers[:queued])


def redis_errors() -> tuple[type[Exception], ...]:
    """Every error the redis driver raises (for a connection made outside ``call``)."""
    import redis

    return (redis.RedisError, redis.exceptions.RedisClusterException)


def _describe(exc: Exception) -> str:
    # A redirection names the slot and the node that holds it; the type says what it was.
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}" if exc.__class__.__name__ not in text else text


def _merged(answers: Any) -> dict[str, str]:
    """One ``CONFIG GET`` answer from each node's: non-empty values win."""
    if not isinstance(answers, dict) or not answers:
        return {}
    first = next(iter(answers.values()))
    if not isinstance(first, dict):
        return {str(k): str(v) for k, v in answers.items()}
    out: dict[str, str] = {}
    for node in answers.values():
        for key, value in node.items():
            if str(value).strip() and str(value).strip() != "no":
                out[str(key)] = str(value)
            else:
                out.setdefault(str(key), str(value))
    return out

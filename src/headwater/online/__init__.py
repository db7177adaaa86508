"""Online stores: what the API reads at request time (SQLite embedded, Redis scale-out).

A Redis Cluster (``redis+cluster://host:port,...`` or ``redis://...?cluster=true``)
keeps each bus partition's keys in one hash slot, so it needs the bus's partitioner:
``open_online_store(url, partition_of=bus.partition_of, partitions=bus.partitions)``
(the composition root passes them; see ``headwater.online.redis_cluster``).
"""

from __future__ import annotations

from collections.abc import Callable

from headwater._url import scheme_of
from headwater.errors import ConfigurationError
from headwater.online.base import OnlineStore, Position

__all__ = [
    "SUPPORTED_ONLINE_STORES",
    "OnlineStore",
    "Partitioner",
    "Position",
    "needs_partitioner",
    "open_online_store",
]

#: The bus's placement of keys, for stores that keep a partition's keys together:
#: ``(partition_of, partitions)``.
Partitioner = tuple[Callable[[str], int], int]


def _sqlite(url: str, partitioner: Partitioner | None) -> OnlineStore:  # noqa: ARG001
    from headwater.online.sqlite import SqliteOnlineStore

    return SqliteOnlineStore(url)


def _redis(url: str, partitioner: Partitioner | None) -> OnlineStore:
    from headwater._redis import is_cluster_url

    if is_cluster_url(url):
        from headwater.online.redis_cluster import RedisClusterOnlineStore

        if partitioner is None:
            return RedisClusterOnlineStore(url)
        return RedisClusterOnlineStore(url, partition_of=partitioner[0], partitions=partitioner[1])
    from headwater.online.redis import RedisOnlineStore

    return RedisOnlineStore(url)


#: URL scheme -> backend factory (``redis+cluster`` is ``redis``: the URL says cluster).
SUPPORTED_ONLINE_STORES: dict[str, Callable[[str, Partitioner | None], OnlineStore]] = {
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
}


def needs_partitioner(url: str) -> bool:
    """Whether the store ``url`` names places keys by the bus's partitions (a cluster)."""
    from headwater._redis import is_cluster_url

    return scheme_of(url) in ("redis", "rediss") and is_cluster_url(url)


def open_online_store(url: str, *, partitioner: Partitioner | None = None) -> OnlineStore:
    """Open the online store a URL names: ``sqlite:///online.db``, ``redis://host:6379/0``
    or ``redis+cluster://host:7000,host:7001`` (with the bus's ``partitioner``)."""
    factory = SUPPORTED_ONLINE_STORES.get(scheme_of(url))
    if factory is None:
        raise ConfigurationError(
            f"no online store for {url}; supported: {sorted(SUPPORTED_ONLINE_STORES)}"
        )
    return factory(url, partitioner)

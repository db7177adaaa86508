"""Online stores: what the API reads at request time (SQLite embedded, Redis scale-out)."""

from __future__ import annotations

from collections.abc import Callable

from headwater._url import scheme_of
from headwater.errors import ConfigurationError
from headwater.online.base import OnlineStore, Position

__all__ = ["SUPPORTED_ONLINE_STORES", "OnlineStore", "Position", "open_online_store"]


def _sqlite(url: str) -> OnlineStore:
    from headwater.online.sqlite import SqliteOnlineStore

    return SqliteOnlineStore(url)


def _redis(url: str) -> OnlineStore:
    from headwater.online.redis import RedisOnlineStore

    return RedisOnlineStore(url)


#: URL scheme -> backend factory.
SUPPORTED_ONLINE_STORES: dict[str, Callable[[str], OnlineStore]] = {
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
}


def open_online_store(url: str) -> OnlineStore:
    """Open the online store a URL names: ``sqlite:///online.db`` or ``redis://host:6379/0``."""
    factory = SUPPORTED_ONLINE_STORES.get(scheme_of(url))
    if factory is None:
        raise ConfigurationError(
            f"no online store for {url}; supported: {sorted(SUPPORTED_ONLINE_STORES)}"
        )
    return factory(url)

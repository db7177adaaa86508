"""The idempotency window: recently accepted event ids, so a re-sent event is published once."""

from __future__ import annotations

from collections.abc import Callable

from headwater._url import scheme_of
from headwater.dedupe.base import IdempotencyWindow
from headwater.errors import ConfigurationError

__all__ = ["SUPPORTED_WINDOWS", "IdempotencyWindow", "open_idempotency_window"]


def _sqlite(url: str, window_s: float) -> IdempotencyWindow:
    from headwater.dedupe.sqlite import SqliteIdempotencyWindow

    return SqliteIdempotencyWindow(url, window_s=window_s)


def _redis(url: str, window_s: float) -> IdempotencyWindow:
    from headwater._redis import is_cluster_url

    if is_cluster_url(url):
        from headwater.dedupe.redis_cluster import RedisClusterIdempotencyWindow

        return RedisClusterIdempotencyWindow(url, window_s=window_s)
    from headwater.dedupe.redis import RedisIdempotencyWindow

    return RedisIdempotencyWindow(url, window_s=window_s)


#: URL scheme -> backend factory (``redis+cluster`` is ``redis``: the URL says cluster).
SUPPORTED_WINDOWS: dict[str, Callable[[str, float], IdempotencyWindow]] = {
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
}


def open_idempotency_window(url: str, *, window_s: float = 86_400.0) -> IdempotencyWindow:
    """The idempotency window a URL names (``sqlite:///dedupe.db``, ``redis://...`` or
    ``redis+cluster://host:port,...``)."""
    factory = SUPPORTED_WINDOWS.get(scheme_of(url))
    if factory is None:
        raise ConfigurationError(
            f"no idempotency-window backend for {url}; supported: {sorted(SUPPORTED_WINDOWS)}"
        )
    return factory(url, window_s)

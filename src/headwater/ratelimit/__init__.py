"""Rate limits per producer key: in process, or shared by every gateway (SQLite on one
host, Redis or PostgreSQL across hosts) so that a producer gets one limit, not one per
gateway process."""

from __future__ import annotations

from collections.abc import Callable

from headwater._url import redacted, scheme_of
from headwater.errors import ConfigurationError
from headwater.ratelimit.base import RateLimiter

__all__ = ["SUPPORTED_LIMITERS", "RateLimiter", "open_rate_limiter"]


def _memory(url: str) -> RateLimiter:
    from headwater.ratelimit.memory import MemoryRateLimiter

    return MemoryRateLimiter(url)


def _sqlite(url: str) -> RateLimiter:
    from headwater.ratelimit.sqlite import SqliteRateLimiter

    return SqliteRateLimiter(url)


def _redis(url: str) -> RateLimiter:
    from headwater.ratelimit.redis import RedisRateLimiter

    return RedisRateLimiter(url)


def _postgres(url: str) -> RateLimiter:
    from headwater.ratelimit.postgres import PostgresRateLimiter

    return PostgresRateLimiter(url)


#: URL scheme -> backend factory.
SUPPORTED_LIMITERS: dict[str, Callable[[str], RateLimiter]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
    "postgresql": _postgres,
    "postgres": _postgres,
}


def open_rate_limiter(url: str) -> RateLimiter:
    """Open the rate limiter a URL names.

    ``memory://`` (this process only), ``sqlite:///path/ratelimit.db`` (every process of
    this host), ``redis://host:6379/0?prefix=hw`` or ``postgresql://host/db`` (every
    gateway using the server).
    """
    factory = SUPPORTED_LIMITERS.get(scheme_of(url))
    if factory is None:
        raise ConfigurationError(
            f"no rate-limiter backend for {redacted(url)}; supported: {sorted(SUPPORTED_LIMITERS)}"
        )
    return factory(url)

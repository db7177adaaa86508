"""The scale-out rate limiter: one Redis hash per key, spent by a Lua script."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from headwater._url import redacted
from headwater.errors import BackendError, BackendUnavailableError, MissingDependencyError
from headwater.ratelimit.base import capacity, refused, wait_for

__all__ = ["RedisRateLimiter"]

_T = TypeVar("_T")

# KEYS[1] the bucket; ARGV events, rate, burst. Returns {1 if spent, tokens left}.
# Redis runs a script alone, so the read, the refill and the write are one atomic step;
# its clock is the server's (TIME), the same for every gateway. The key expires when the
# bucket would be full again: a missing bucket starts full, so nothing is lost.
_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local events = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cap = math.max(burst, 1)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'rate', 'burst', 'tokens', 'stamp')
local tokens = cap
if tonumber(b[1]) == rate and tonumber(b[2]) == burst then
  tokens = math.min(cap, tonumber(b[3]) + math.max(0, now - tonumber(b[4])) * rate)
end
local spent = 0
if tokens >= math.min(events, cap) then
  tokens = tokens - events
  spent = 1
end
local left = string.format('%.17g', tokens)
redis.call('HSET', KEYS[1], 'rate', ARGV[2], 'burst', ARGV[3], 'tokens', left,
  'stamp', string.format('%.17g', now))
local ttl = 1e13
if rate > 0 then ttl = math.min(ttl, math.ceil((cap - tokens) / rate * 1000) + 1000) end
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
return {spent, left}
"""
_SHA = hashlib.sha1(_SCRIPT.encode(), usedforsecurity=False).hexdigest()


class RedisRateLimiter:
    """``<prefix>:rl:<key id>`` hashes in ``redis://host:port/db?prefix=hw``, shared by
    every gateway that uses the same server and prefix."""

    def __init__(self, url: str) -> None:
        try:
            import redis
        except ImportError:
            raise MissingDependencyError("redis", "redis", "redis") from None
        self.url = url
        query = parse_qs(urlsplit(url).query)
        self.prefix = query.get("prefix", ["hw"])[-1]
        self._redis: Any = redis.Redis.from_url(
            url.split("?", 1)[0], socket_timeout=10, socket_connect_timeout=5
        )
        self._noscript = redis.exceptions.NoScriptError
        self._down = (redis.ConnectionError, redis.TimeoutError)
        self._errors = (redis.RedisError,)

    def _call(self, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except self._down as exc:
            raise BackendUnavailableError(f"Redis at {redacted(self.url)}: {exc}") from exc
        except self._errors as exc:
            raise BackendError(f"Redis rate limiter at {redacted(self.url)}: {exc}") from exc

    def _run(self, key: str, events: int, rate: float, burst: float) -> Any:
        args = (1, key, events, repr(float(rate)), repr(float(burst)))
        try:
            return self._redis.evalsha(_SHA, *args)
        except self._noscript:
            # Not cached on this server yet (a restart, a failover): EVAL sends the text,
            # and caches it for the next EVALSHA.
            return self._redis.eval(_SCRIPT, *args)

    def take(self, key_id: str, events: int, rate: float, burst: float) -> None:
        key = f"{self.prefix}:rl:{key_id}"
        spent, left = self._call(lambda: self._run(key, events, rate, burst))
        if not spent:
            need = min(float(events), capacity(burst))
            raise refused(rate, burst, wait_for(need - float(left), rate))

    def close(self) -> None:
        self._redis.close()

"""The scale-out rate limiter: one Redis hash per key, spent by a Lua script."""

from __future__ import annotations

import hashlib
from typing import Any

from headwater._redis import RedisConnection
from headwater.ratelimit.base import capacity, refused, wait_for

__all__ = ["RedisRateLimiter"]

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
        self.url = url
        self._conn = RedisConnection(url, what="Redis rate limiter", socket_timeout=10)
        self.prefix = self._conn.prefix
        self._redis = self._conn.client

    def _run(self, key: str, events: int, rate: float, burst: float) -> Any:
        args = (1, key, events, repr(float(rate)), repr(float(burst)))
        try:
            return self._redis.evalsha(_SHA, *args)
        except self._conn.no_script:
            # Not cached on this server yet (a restart, a failover): EVAL sends the text,
            # and caches it for the next EVALSHA.
            return self._redis.eval(_SCRIPT, *args)

    def take(self, key_id: str, events: int, rate: float, burst: float) -> None:
        key = f"{self.prefix}:rl:{key_id}"
        spent, left = self._conn.call(lambda: self._run(key, events, rate, burst))
        if not spent:
            need = min(float(events), capacity(burst))
            raise refused(rate, burst, wait_for(need - float(left), rate))

    def close(self) -> None:
        self._conn.close()

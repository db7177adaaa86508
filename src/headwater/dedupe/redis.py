"""The scale-out idempotency window: Redis keys with a TTL, shared by every gateway.

One Redis node; a Redis Cluster is ``headwater.dedupe.redis_cluster`` (its scripts
touch keys of one slot only)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from headwater._redis import RedisConnection
from headwater.dedupe.base import Claim, Pending

__all__ = ["RedisIdempotencyWindow"]


# KEYS: the ids' keys. ARGV: token, now (ms), ttl (ms), the confirmed-token key prefix,
# then each id's user. An id's value is "token|claimed ms|user"; a value without "|" was
# written before claims existed and counts as accepted. Per id: M (claimed now, or by
# this token before), D (accepted: its token is confirmed), P|token|ms (another send's).
_CLAIM = """
local token, now, ttl, done = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out = {}
for i, key in ipairs(KEYS) do
  local value = token .. '|' .. now .. '|' .. ARGV[4 + i]
  if redis.call('SET', key, value, 'NX', 'PX', ttl) then
    out[i] = 'M'
  else
    local held = redis.call('GET', key) or ''
    local owner, ms = string.match(held, '^([^|]*)|([^|]*)|')
    if owner == nil then
      out[i] = 'D'
    elseif owner == token then
      out[i] = 'M'
    elseif redis.call('EXISTS', done .. owner) == 1 then
      out[i] = 'D'
    else
      out[i] = 'P|' .. owner .. '|' .. ms
    end
  end
end
return out
"""
# KEYS: the ids' keys. ARGV: token. Deletes the ids this token still holds.
_RELEASE = """
for _, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if held and string.sub(held, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '|' then
    redis.call('DEL', key)
  end
end
return 1
"""
# KEYS: the ids' keys. ARGV: old token, new token, now, ttl, the old token's confirmed key.
# Moves an id to the new token where the old one still holds it and never confirmed.
_TAKE_OVER = """
local old, new, now, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local confirmed = redis.call('EXISTS', ARGV[5]) == 1
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = 0
  local held = redis.call('GET', key)
  if held and not confirmed then
    local owner, _, user = string.match(held, '^([^|]*)|([^|]*)|(.*)$')
    if owner == old then
      redis.call('SET', key, new .. '|' .. now .. '|' .. user, 'PX', ttl)
      out[i] = 1
    end
  end
end
return out
"""


class RedisIdempotencyWindow:
    """``hw:dd:<event id>`` -> user id with a TTL; ``hw:ddu:<user>`` lists a user's ids."""

    def __init__(self, url: str, *, window_s: float) -> None:
        self.url = url
        self.window_s = window_s
        self._conn = RedisConnection(url, what="Redis idempotency window", socket_timeout=10)
        self._prefix = self._conn.prefix
        self._ttl_ms = int(window_s * 1000)
        self._redis = self._conn.client
        self._call = self._conn.call

    def _ids(self, event_ids: Sequence[str]) -> list[str]:
        return [f"{self._prefix}:dd:{e}" for e in event_ids]

    def seen(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()

        def read() -> set[str]:
            values = self._redis.mget(self._ids(event_ids))
            held = {e: v.decode() for e, v in zip(event_ids, values, strict=True) if v}
            tokens = {e: v.split("|", 1)[0] for e, v in held.items() if "|" in v}
            pipe = self._redis.pipeline(transaction=False)
            for token in tokens.values():
                pipe.exists(f"{self._prefix}:ddt:{token}")
            confirmed = dict(zip(tokens.values(), pipe.execute(), strict=True))
            return {e for e in held if e not in tokens or confirmed[tokens[e]]}

        return self._call(read)

    def _script(self, source: str, keys: Sequence[str], args: Sequence[object]) -> Any:
        sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        try:
            return self._redis.evalsha(sha, len(keys), *keys, *args)
        except self._conn.no_script:
            return self._redis.eval(source, len(keys), *keys, *args)

    def claim(self, entries: Sequence[tuple[str, str]], token: str) -> Claim:
        out = Claim()
        if not entries:
            return out
        now = int(time.time() * 1000)
        keys = self._ids([e for e, _ in entries])
        args = [token, now, self._ttl_ms, f"{self._prefix}:ddt:", *(u for _, u in entries)]
        answers = self._call(lambda: self._script(_CLAIM, keys, args))
        for (event_id, _), answer in zip(entries, answers, strict=True):
            kind, _, rest = answer.decode().partition("|")
            if kind == "M":
                out.mine.add(event_id)
            elif kind == "D":
                out.done.add(event_id)
            else:
                held_by, _, claimed_ms = rest.partition("|")
                out.pending[event_id] = Pending(held_by, int(claimed_ms))
        mine = [(e, u) for e, u in entries if e in out.mine]
        if mine:
            self._index_users(mine)
        return out

    def _index_users(self, entries: Sequence[tuple[str, str]]) -> None:
        # Each user's ids, so that an erasure finds them without a scan.
        def write() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for event_id, user_id in entries:
                user_key = f"{self._prefix}:ddu:{user_id}"
                pipe.sadd(user_key, event_id)
                pipe.pexpire(user_key, self._ttl_ms)
            pipe.execute()

        self._call(write)

    def claim_many(self, sends: Sequence[tuple[Sequence[tuple[str, str]], str]]) -> list[Claim]:
        # One script per send: each is atomic over its own ids, as ``claim`` is.
        return [self.claim(entries, token) for entries, token in sends]

    def confirm(self, token: str) -> None:
        self.confirm_many([token])

    def confirm_many(self, tokens: Sequence[str]) -> None:
        def write() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for token in tokens:
                pipe.set(f"{self._prefix}:ddt:{token}", 1, px=self._ttl_ms)
            pipe.execute()

        if tokens:
            self._call(write)

    def release(self, token: str, event_ids: Sequence[str]) -> None:
        if event_ids:
            self._call(lambda: self._script(_RELEASE, self._ids(event_ids), [token]))

    def take_over(self, claims: Mapping[str, Sequence[str]], token: str) -> set[str]:
        moved: set[str] = set()
        now = int(time.time() * 1000)
        for old, event_ids in claims.items():
            if not event_ids:
                continue
            keys = self._ids(event_ids)
            args = [old, token, now, self._ttl_ms, f"{self._prefix}:ddt:{old}"]
            flags = self._call(lambda k=keys, a=args: self._script(_TAKE_OVER, k, a))  # type: ignore[misc]
            moved.update(e for e, f in zip(event_ids, flags, strict=True) if int(f))
        return moved

    def remember(self, entries: Sequence[tuple[str, str]]) -> None:
        token = f"r{time.time_ns()}"
        self.claim(entries, token)
        self.confirm(token)

    def erase_user(self, user_id: str) -> int:
        user_key = f"{self._prefix}:ddu:{user_id}"

        def erase() -> int:
            ids = [i.decode() for i in self._redis.smembers(user_key)]
            pipe = self._redis.pipeline(transaction=True)
            for event_id in ids:
                pipe.delete(f"{self._prefix}:dd:{event_id}")
            pipe.delete(user_key)
            results = pipe.execute()
            return int(sum(results[:-1]))

        return int(self._call(erase))

    def count_user(self, user_id: str) -> int:
        user_key = f"{self._prefix}:ddu:{user_id}"

        def count() -> int:
            ids = [i.decode() for i in self._redis.smembers(user_key)]
            found = self._redis.exists(*[f"{self._prefix}:dd:{i}" for i in ids]) if ids else 0
            return int(found) + (1 if ids else 0)

        return int(self._call(count))

    def erase_users(self, user_ids: Sequence[str]) -> dict[str, int]:
        # Each user's entries are found through its own set: no scan to share.
        return {user: self.erase_user(user) for user in dict.fromkeys(user_ids)}

    def count_users(self, user_ids: Sequence[str]) -> dict[str, int]:
        return {user: self.count_user(user) for user in dict.fromkeys(user_ids)}

    def scrub(self, erased: Collection[str] = (), *, rebuild: bool = False) -> dict[str, object]:
        del erased, rebuild  # no pages to rebuild: what the server persists is reported
        return self._conn.persistence()

    def close(self) -> None:
        self._conn.close()

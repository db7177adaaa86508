"""The scale-out idempotency window: Redis keys with a TTL, shared by every gateway."""

from __future__ import annotations

from collections.abc import Sequence

from headwater._redis import RedisConnection

__all__ = ["RedisIdempotencyWindow"]


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

    def seen(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        keys = [f"{self._prefix}:dd:{e}" for e in event_ids]
        values = self._call(lambda: self._redis.mget(keys))
        return {e for e, v in zip(event_ids, values, strict=True) if v is not None}

    def remember(self, entries: Sequence[tuple[str, str]]) -> None:
        def write() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for event_id, user_id in entries:
                pipe.set(f"{self._prefix}:dd:{event_id}", user_id, px=self._ttl_ms)
                user_key = f"{self._prefix}:ddu:{user_id}"
                pipe.sadd(user_key, event_id)
                pipe.pexpire(user_key, self._ttl_ms)
            pipe.execute()

        self._call(write)

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

    def close(self) -> None:
        self._conn.close()

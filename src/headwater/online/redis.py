"""The scale-out online store on one Redis node.

A Redis Cluster does not work with this module: its keys (one positions hash per
group, rows keyed by namespace) span slots, and a plain client meets ``MOVED``. For a
cluster (``redis+cluster://`` or ``?cluster=true``) the registry opens
``headwater.online.redis_cluster``, which keeps each bus partition's keys in one slot.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeVar

from headwater._redis import RedisConnection
from headwater.errors import FencedError, OnlineStoreError
from headwater.online.base import Position

__all__ = ["RedisOnlineStore"]

_T = TypeVar("_T")


class RedisOnlineStore:
    """Rows as ``<prefix>:<namespace>:<key>`` strings; positions in one hash per group.

    Rows and positions go in one MULTI/EXEC transaction, so a reader or a restarted
    consumer never sees rows without the positions that produced them.
    """

    local = False

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn = RedisConnection(url, what="Redis online store", error=OnlineStoreError)
        self.prefix = self._conn.prefix
        self._redis = self._conn.client
        self._call = self._conn.call
        self._watch_error = self._conn.watch_error

    def _key(self, namespace: str, key: str) -> str:
        return f"{self.prefix}:{namespace}:{key}"

    def get(self, namespace: str, keys: Sequence[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        values = self._call(lambda: self._redis.mget([self._key(namespace, k) for k in keys]))
        return {k: v for k, v in zip(keys, values, strict=True) if v is not None}

    def put(
        self,
        namespace: str,
        rows: Mapping[str, bytes],
        *,
        group: str = "",
        positions: Mapping[int, Position] | None = None,
        fence: Mapping[int, int] | None = None,
    ) -> None:
        fences = f"{self.prefix}:fences:{group}"

        def write() -> None:
            with self._redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        if fence:
                            # WATCH: a claim between this check and EXEC aborts the write.
                            pipe.watch(fences)
                            held = [str(p) for p in fence]
                            current = dict(zip(held, pipe.hmget(fences, held), strict=True))
                            self._check_fence(group, fence, current)
                            pipe.multi()
                        if rows:
                            pipe.mset({self._key(namespace, k): v for k, v in rows.items()})
                        if positions:
                            pipe.hset(
                                f"{self.prefix}:positions:{group}",
                                mapping={
                                    str(p): f"{pos.next_offset}:{pos.as_of_ms}"
                                    for p, pos in positions.items()
                                },
                            )
                        pipe.execute()
                    except self._watch_error:
                        continue  # the fences changed: look at them again
                    return

        self._call(write)

    @staticmethod
    def _check_fence(group: str, fence: Mapping[int, int], current: Mapping[str, Any]) -> None:
        found = {p: int(current[str(p)] or 0) for p in fence}
        stale = sorted(p for p, g in fence.items() if found[p] != g)
        if stale:
            raise FencedError(
                f"group {group!r}: partitions {stale} were claimed by another member "
                f"(generations {[found[p] for p in stale]}, this writer holds "
                f"{[fence[p] for p in stale]})",
                stale,
            )

    def claim(self, group: str, partitions: Sequence[int]) -> dict[int, int]:
        if not partitions:
            return {}
        fences = f"{self.prefix}:fences:{group}"

        def incr() -> list[int]:
            pipe = self._redis.pipeline(transaction=True)
            for p in partitions:
                pipe.hincrby(fences, str(p), 1)
            return [int(g) for g in pipe.execute()]

        return dict(zip(partitions, self._call(incr), strict=True))

    def positions(self, group: str) -> dict[int, Position]:
        raw = self._call(lambda: self._redis.hgetall(f"{self.prefix}:positions:{group}"))
        out = {}
        for p, value in raw.items():
            offset, as_of = value.decode().split(":")
            out[int(p)] = Position(int(offset), int(as_of))
        return out

    def delete(self, namespace: str, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        return int(self._call(lambda: self._redis.delete(*[self._key(namespace, k) for k in keys])))

    def count(self, namespace: str, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        return int(self._call(lambda: self._redis.exists(*[self._key(namespace, k) for k in keys])))

    def keys(self, namespace: str) -> list[str]:
        head = len(self.prefix) + len(namespace) + 2
        found = self._call(
            lambda: list(self._redis.scan_iter(match=f"{self.prefix}:{namespace}:*", count=1000))
        )
        return [k.decode()[head:] for k in found]

    def clear(self, namespace: str) -> int:
        keys = self.keys(namespace)
        removed = 0
        for start in range(0, len(keys), 1000):
            removed += self.delete(namespace, keys[start : start + 1000])
        return removed

    def scrub(self, erased: Collection[str] = (), *, rebuild: bool = False) -> dict[str, object]:
        del erased, rebuild  # no pages to rebuild: what the server persists is reported
        return self._conn.persistence()

    def close(self) -> None:
        self._conn.close()

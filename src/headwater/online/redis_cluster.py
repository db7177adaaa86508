"""The online store on a Redis Cluster: each bus partition's keys in one hash slot.

``redis+cluster://host:port,host:port/?prefix=hw`` (or ``redis://host:port?cluster=true``).

Key layout. Every key carries the hash tag of the bus partition it belongs to, so that
a partition's rows, its committed position and its fence live in one slot::

    {<prefix>:p<partition>}:<namespace>:<key>     a row (``partition = partition_of(key)``)
    {<prefix>:p<partition>}:positions:<group>     "<next offset>:<as of ms>"
    {<prefix>:p<partition>}:fence:<group>         the partition's claim generation

``partition_of`` is the bus's own partitioner (the composition root passes
``Bus.partition_of`` and ``Bus.partitions``; without them the URL's ``?partitions=N``
is used with the CRC-32 partitioner of the SQLite and NATS buses). A reader computes
a user's key from the user id alone, so a read of one user is one ``GET`` (several
users: one ``MGET`` per slot, pipelined, one round trip per master). The cluster
spreads data over as many slots as the bus has partitions: give the bus at least as
many partitions as the cluster has masters (many more spreads memory evenly).

Writes. ``put`` splits its rows by partition; each partition's rows, position and
fence check are one Lua script on its slot (atomic: a reader or a restarted consumer
never sees rows without the position that produced them, and a fenced writer writes
nothing of that partition). A put that spans partitions is atomic per partition,
which is what replay needs: a partition whose script ran skips its records on replay,
another re-applies them, and no row of one partition lives in another's slot.

Failover. Replication is asynchronous. By default (``?wait=1``) each write (a put's
script, a claim) is followed on the same connection by ``WAIT 1 <wait_ms>`` (default
1000): it returns only once a replica holds it, so a master killed after the
acknowledgement loses none of it when that replica is promoted
(``tests/history/test_exactly_once.py::test_exactly_once_on_a_redis_cluster_losing_a_master``).
A WAIT that times out raises ``BackendUnavailableError``; the consumer retries the
batch, finds the position written (the master has it) and goes on. What can still be
lost: a write whose WAIT timed out, if its master then dies before the replica catches
up; and any write to a master that has no connected replica (after its replica was
promoted away and before the old node rejoins, there is nothing to wait for, so the
write is not held up: the same state as one node without persistence). ``?wait=0``
skips the wait: then a write acknowledged in the last moments before a master dies
(the replication lag, usually under a millisecond) can be lost with its position,
and since the bus offset is committed after the write, the running consumer does not
read those records again: they are lost from the features until the partition is
replayed (``headwater`` rebuilds from the archive). Keep ``wait=1``.

Erasure: a user's rows are found by key (``delete``/``count``); ``keys`` and ``clear``
SCAN every master.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from headwater._redis import RedisConnection, ReplicaAcks
from headwater.bus.base import partition_for
from headwater.errors import (
    ConfigurationError,
    FencedError,
    OnlineStoreError,
)
from headwater.online.base import Position

__all__ = ["RedisClusterOnlineStore"]

_T = TypeVar("_T")

# KEYS: fence, position, then the rows. ARGV: the generation the writer holds ('' when
# unfenced), the position ('' when none), then the rows' values. {1} when written, else
# {0, the generation found}.
_PUT = """
if ARGV[1] ~= '' then
  local held = redis.call('GET', KEYS[1]) or '0'
  if held ~= ARGV[1] then return {0, held} end
end
for i = 3, #KEYS do redis.call('SET', KEYS[i], ARGV[i]) end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) end
return {1, ''}
"""
#: Attempts at a write while the cluster moves a slot or promotes a replica.
_ATTEMPTS = 6


class RedisClusterOnlineStore:
    """Rows, positions and fences of one bus partition in one hash slot."""

    local = False

    def __init__(
        self,
        url: str,
        *,
        partition_of: Callable[[str], int] | None = None,
        partitions: int | None = None,
    ) -> None:
        self.url = url
        query = parse_qs(urlsplit(url).query)
        declared = query.get("partitions", [""])[-1]
        if partitions is None:
            if not declared:
                raise ConfigurationError(
                    f"Redis Cluster online store {url}: the bus's partition count is needed "
                    "(open it through the application, or add ?partitions=N)"
                )
            partitions = int(declared)
        elif declared and int(declared) != partitions:
            raise ConfigurationError(
                f"Redis Cluster online store {url}: ?partitions={declared}, but the bus has "
                f"{partitions}"
            )
        if partitions < 1:
            raise ConfigurationError(f"Redis Cluster online store {url}: no partitions")
        self.partitions = partitions
        n = partitions
        self.partition_of = partition_of or (lambda key: partition_for(key, n))
        self._acks = ReplicaAcks(url)
        self._conn = RedisConnection(url, what="Redis Cluster online store", error=OnlineStoreError)
        self.prefix = self._conn.prefix
        self._redis = self._conn.client
        self._call = self._conn.call
        import redis

        # What a write meets while a slot moves or a replica is promoted: look again.
        self._retry: tuple[type[Exception], ...] = (
            redis.ConnectionError,
            redis.TimeoutError,
            redis.exceptions.ClusterDownError,
            redis.exceptions.TryAgainError,
            redis.exceptions.AskError,  # MovedError too
        )

    def _tag(self, partition: int) -> str:
        return f"{{{self.prefix}:p{partition}}}"

    def _key(self, namespace: str, key: str) -> str:
        return f"{self._tag(self.partition_of(key))}:{namespace}:{key}"

    def get(self, namespace: str, keys: Sequence[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        names = [self._key(namespace, k) for k in keys]
        if len(names) == 1:
            value = self._call(lambda: self._redis.get(names[0]))
            return {keys[0]: value} if value is not None else {}
        values = self._call(lambda: self._redis.mget_nonatomic(names))
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
        positions = positions or {}
        fence = fence or {}
        by_partition: dict[int, dict[str, bytes]] = {}
        for key, value in rows.items():
            by_partition.setdefault(self.partition_of(key), {})[key] = value
        if fence:
            # Every generation first: a stale one refuses the whole put, nothing written.
            self._check_fence(group, fence, self._generations(group, fence))
        for p in sorted(set(by_partition) | set(positions)):
            self._put_partition(
                p,
                namespace,
                by_partition.get(p, {}),
                group=group,
                position=positions.get(p),
                generation=fence.get(p),
            )

    def _put_partition(
        self,
        partition: int,
        namespace: str,
        rows: Mapping[str, bytes],
        *,
        group: str,
        position: Position | None,
        generation: int | None,
    ) -> None:
        tag = self._tag(partition)
        keys = [f"{tag}:fence:{group}", f"{tag}:positions:{group}"]
        keys += [f"{tag}:{namespace}:{k}" for k in rows]
        args: list[object] = [
            "" if generation is None else str(generation),
            "" if position is None else f"{position.next_offset}:{position.as_of_ms}",
            *rows.values(),
        ]
        written, found = self._on_slot(
            keys[0], lambda pipe: pipe.eval(_PUT, len(keys), *keys, *args)
        )
        if not int(written):
            assert generation is not None
            self._check_fence(group, {partition: generation}, {partition: found})

    def _on_slot(self, key: str, command: Callable[[Any], object]) -> Any:
        """Run ``command`` on the master of ``key``'s slot, then ``WAIT`` for its replicas
        on the same connection; the command's answer. Retried while the cluster moves
        the slot or promotes a replica (the commands given are idempotent)."""

        def attempt() -> Any:
            for n in range(_ATTEMPTS):
                try:
                    node = self._redis.get_node_from_key(key)
                    return self._acks.execute(self._redis, node, command)[0]
                except self._retry:
                    if n == _ATTEMPTS - 1:
                        raise
                    time.sleep(0.1 * 2**n)
                    self._redis.nodes_manager.initialize()
            raise AssertionError("unreachable")

        return self._call(attempt)

    def _generations(self, group: str, partitions: Iterable[int]) -> dict[int, Any]:
        held = list(partitions)
        names = [f"{self._tag(p)}:fence:{group}" for p in held]
        found = self._call(lambda: self._redis.mget_nonatomic(names))
        return dict(zip(held, found, strict=True))

    @staticmethod
    def _check_fence(group: str, fence: Mapping[int, int], current: Mapping[int, Any]) -> None:
        found = {p: int(current[p] or 0) for p in fence}
        stale = sorted(p for p, g in fence.items() if found[p] != g)
        if stale:
            raise FencedError(
                f"group {group!r}: partitions {stale} were claimed by another member "
                f"(generations {[found[p] for p in stale]}, this writer holds "
                f"{[fence[p] for p in stale]})",
                stale,
            )

    def claim(self, group: str, partitions: Sequence[int]) -> dict[int, int]:
        out = {}
        for p in partitions:
            key = f"{self._tag(p)}:fence:{group}"
            out[p] = int(self._on_slot(key, lambda pipe, k=key: pipe.incr(k)))  # type: ignore[misc]
        return out

    def positions(self, group: str) -> dict[int, Position]:
        names = [f"{self._tag(p)}:positions:{group}" for p in range(self.partitions)]
        raw = self._call(lambda: self._redis.mget_nonatomic(names))
        out = {}
        for p, value in enumerate(raw):
            if value is not None:
                offset, as_of = value.decode().split(":")
                out[p] = Position(int(offset), int(as_of))
        return out

    def delete(self, namespace: str, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        names = [self._key(namespace, k) for k in keys]
        return int(self._call(lambda: self._redis.delete(*names)))

    def count(self, namespace: str, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        names = [self._key(namespace, k) for k in keys]
        return int(self._call(lambda: self._redis.exists(*names)))

    def keys(self, namespace: str) -> list[str]:
        marker = f"}}:{namespace}:"
        pattern = f"{{{self.prefix}:p*{marker}*"

        def scan() -> list[str]:
            found: list[str] = []
            # Each master in turn: a SCAN sees the keys of the node it is sent to.
            for node in self._conn.primaries():
                for name in self._redis.scan_iter(match=pattern, count=1000, target_nodes=node):
                    text = name.decode()
                    found.append(text[text.index(marker) + len(marker) :])
            return found

        return self._call(scan)

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

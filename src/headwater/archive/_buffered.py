"""Large batches for the archive: a bus view whose polls gather records by size or time.

A Delta commit per small poll would make many small files and a long log. The
handler may not hold records back across ``handle`` calls (the runtime commits the
bus position when ``handle`` returns), so the gathering happens before: one poll of
this view keeps reading until it holds ``max_records`` or ``max_wait_s`` has passed
since its first record, and the runtime then hands the whole batch to one Delta
commit. Positions still move only after that commit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence

from headwater.bus.base import (
    KIND_ERASURE,
    Bus,
    BusConsumer,
    ErasureCapability,
    Message,
    PartitionLag,
    Record,
    joined,
    kinds_of,
)

__all__ = ["BufferedBus"]


def _has_erasure(records: Sequence[Record]) -> bool:
    return KIND_ERASURE in kinds_of(records)


class _BufferedConsumer:
    def __init__(self, inner: BusConsumer, owner: BufferedBus) -> None:
        self._inner = inner
        self._owner = owner
        self.group = inner.group

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> Sequence[Record]:
        limit = max(max_records, self._owner.max_records)
        records = self._inner.poll(limit, timeout)
        if not records:
            return records
        polls = [records]
        held = len(records)
        deadline = time.monotonic() + self._owner.max_wait_s
        stop = self._owner.stop_event
        # An erasure goes out at once: it should not wait for a batch to fill. Only the
        # records of each poll are looked at (the gathered ones were looked at before).
        erasure = _has_erasure(records)
        while held < limit and not erasure and not (stop is not None and stop.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # Every read so far held less than asked: let records arrive rather than read
            # them a few at a time (each read is a query and a decode on the shared core).
            pause = min(left, self._owner.gather_interval_s)
            if stop is not None:
                stop.wait(pause)
            else:
                time.sleep(pause)
            left = deadline - time.monotonic()
            more = self._inner.poll(limit - held, max(0.0, min(left, 0.5)))
            polls.append(more)
            held += len(more)
            erasure = _has_erasure(more)
        return joined(polls)

    def commit(self, positions: Mapping[int, int]) -> None:
        self._inner.commit(positions)

    def assignment(self) -> set[int]:
        return self._inner.assignment()

    def close(self) -> None:
        self._inner.close()


class BufferedBus(Bus):
    """Wraps a bus; its consumers gather up to ``max_records`` or ``max_wait_s`` per poll,
    reading the bus at most every ``gather_interval_s`` while it has less than that.

    Everything else is the wrapped bus's own, delegated method by method.
    """

    def __init__(
        self,
        inner: Bus,
        *,
        max_records: int = 50_000,
        max_wait_s: float = 5.0,
        gather_interval_s: float = 0.2,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.inner = inner
        self.gather_interval_s = gather_interval_s
        self.url = inner.url
        self.partitions = inner.partitions
        self.max_records = max_records
        self.max_wait_s = max_wait_s
        self.stop_event = stop_event

    def consumer(self, group: str, *, member: str | None = None) -> BusConsumer:
        """A gathering member of ``group``."""
        return _BufferedConsumer(self.inner.consumer(group, member=member), self)

    def publish(self, messages: Sequence[Message]) -> None:
        self.inner.publish(messages)

    def partition_of(self, key: str) -> int:
        return self.inner.partition_of(key)

    def lag(self, group: str) -> list[PartitionLag]:
        return self.inner.lag(group)

    def erasure_capability(self) -> ErasureCapability:
        return self.inner.erasure_capability()

    def purge_key(self, key: str, where: Callable[[Record], bool] | None = None) -> int:
        return self.inner.purge_key(key, where)

    def purge_keys(self, wheres: Mapping[str, Callable[[Record], bool] | None]) -> dict[str, int]:
        return self.inner.purge_keys(wheres)

    def count_keys(
        self, wheres: Mapping[str, Callable[[Record], bool] | None]
    ) -> dict[str, int] | None:
        return self.inner.count_keys(wheres)

    def search_partitions(
        self,
        partitions: Collection[int],
        holds: Callable[[bytes], bool],
        keep: Callable[[Record], bool],
        *,
        ids: Collection[str] = (),
    ) -> list[Record] | None:
        return self.inner.search_partitions(partitions, holds, keep, ids=ids)

    def purge_recent(
        self, wheres: Mapping[str, Callable[[Record], bool] | None], since_ms: int
    ) -> dict[str, int] | None:
        return self.inner.purge_recent(wheres, since_ms)

    def purge_indexed(
        self, kind: str, wheres: Mapping[str, Callable[[Record], bool] | None]
    ) -> dict[str, int] | None:
        return self.inner.purge_indexed(kind, wheres)

    def close(self) -> None:
        self.inner.close()

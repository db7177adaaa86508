"""The bus port: one partitioned log of canonical signals and erasure events.

Records are keyed by ``user_id``; a key always maps to the same partition, so all of
one user's records (and a later erasure event) stay in order. ``publish`` returns
only once the records are durable. Consumers read in named groups; the partitions
are split across a group's members, and each member resumes from the group's
committed position.

Positions are per partition: ``offset`` is the record's position, and a commit
stores the *next* offset to read (as Kafka does).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Protocol

import msgspec

try:  # compiled (setup.py): a poll's records, read in place from the SQLite bus's batches
    from headwater.bus._batch import RecordBatch
except ImportError:  # pragma: no cover - installed without a C compiler
    RecordBatch = None  # type: ignore[assignment,misc]

__all__ = [
    "KIND_ERASURE",
    "KIND_SIGNAL",
    "Bus",
    "BusConsumer",
    "ErasureCapability",
    "KindConsumer",
    "KindFilter",
    "Message",
    "PartitionLag",
    "Record",
    "RecordBatch",
    "committed_positions",
    "group_lag",
    "in_partitions",
    "joined",
    "keys_of",
    "kinds_of",
    "partition_for",
]

KIND_SIGNAL = "signal"
KIND_ERASURE = "erasure"


class Message(msgspec.Struct, frozen=True):
    """A record to publish: routing key (the user id), kind and encoded value."""

    key: str
    value: bytes
    kind: str = KIND_SIGNAL


class Record(msgspec.Struct, frozen=True, array_like=True):
    """A record as read from the bus (encoded as an array where a backend stores records)."""

    partition: int
    offset: int
    key: str
    kind: str
    value: bytes
    timestamp_ms: int  # when the bus appended it (milliseconds since the epoch)


class PartitionLag(msgspec.Struct, frozen=True):
    """How far a group is behind on one partition."""

    group: str
    partition: int
    committed: int  # next offset the group will read
    end: int  # offset the next published record will get
    lag_events: int
    lag_seconds: float  # age of the oldest record the group has not committed (0 when caught up)


def group_lag(parts: Iterable[PartitionLag]) -> tuple[int, float]:
    """A group's lag over its partitions: the events behind in all of them, and the
    oldest of them in seconds (0.0 when none is behind)."""
    events, seconds = 0, 0.0
    for p in parts:
        events += p.lag_events
        seconds = max(seconds, p.lag_seconds)
    return events, seconds


class ErasureCapability(msgspec.Struct, frozen=True):
    """What a bus backend can do about one user's records, stated honestly.

    ``method`` is ``"purge"`` when records can be deleted on request, otherwise
    ``"retention"`` (they age out) or ``"compaction"``. ``retention_seconds`` bounds
    how long a record can outlive an erasure when it cannot be purged.
    """

    can_purge: bool
    method: str
    retention_seconds: float | None
    detail: str


def partition_for(key: str, partitions: int) -> int:
    """The partition of a key for backends that place records themselves (CRC-32)."""
    return zlib.crc32(key.encode()) % partitions


class BusConsumer(Protocol):
    """One member of a consumer group."""

    group: str

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> Sequence[Record]:
        """Up to ``max_records`` records from assigned partitions, in offset order per partition.

        Waits up to ``timeout`` seconds when nothing is available. After a restart or a
        rebalance, reading resumes from the group's committed position, so records read
        but not committed are delivered again.
        """
        ...

    def commit(self, positions: Mapping[int, int]) -> None:
        """Durably store the group's next offset per partition (``partition -> offset``)."""
        ...

    def assignment(self) -> set[int]:
        """The partitions this member currently reads."""
        ...

    def close(self) -> None:
        """Leave the group; its partitions go to the remaining members."""
        ...


class KindConsumer(BusConsumer, Protocol):
    """A member that hands over the records of some kinds only (``Bus.kind_consumer``):
    a consumer that acts on erasure events alone need not be handed every signal."""

    def covered(self) -> dict[int, int]:
        """Per partition the last poll read, one past the last record it read there,
        records of other kinds included: what a commit after handling the records it
        returned covers."""
        ...


class KindFilter:
    """``Bus.kind_consumer`` for any bus: every record is read and decoded, and those of
    other kinds are dropped before the caller sees them."""

    def __init__(self, inner: BusConsumer, kinds: Collection[str]) -> None:
        self.inner = inner
        self.group = inner.group
        self.kinds = frozenset(kinds)
        self._covered: dict[int, int] = {}

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        records = self.inner.poll(max_records, timeout)
        self._covered = committed_positions(records)
        return [r for r in records if r.kind in self.kinds]

    def covered(self) -> dict[int, int]:
        return dict(self._covered)

    def commit(self, positions: Mapping[int, int]) -> None:
        self.inner.commit(positions)

    def assignment(self) -> set[int]:
        return self.inner.assignment()

    def close(self) -> None:
        self.inner.close()


class Bus(Protocol):
    """A partitioned, durable log of records, selected by URL."""

    url: str
    partitions: int

    def publish(self, messages: Sequence[Message]) -> None:
        """Append messages; returns only once every one is durable.

        Raises ``BackendUnavailableError`` when the bus cannot be reached; a failed call
        may have appended some messages, and a retry can append them again (consumers
        are idempotent by event id).
        """
        ...

    def partition_of(self, key: str) -> int:
        """The partition a key's records go to (readers use it to find a user's as_of)."""
        ...

    def consumer(self, group: str, *, member: str | None = None) -> BusConsumer:
        """Join ``group`` as a new member (``member`` names it in logs and lag reports)."""
        ...

    def lag(self, group: str) -> list[PartitionLag]:
        """The group's lag on every partition."""
        ...

    def erasure_capability(self) -> ErasureCapability:
        """What this backend can do to erase one key's records."""
        ...

    def purge_key(self, key: str, where: Callable[[Record], bool] | None = None) -> int:
        """Delete the records of ``key`` (those ``where`` selects, if given); the number deleted.

        Raises ``BusError`` on backends whose ``erasure_capability().can_purge`` is False.
        """
        ...

    # The methods below have a default here; backends that can do better override them
    # (a backend class subclasses ``Bus`` explicitly to inherit the defaults).

    def kind_consumer(
        self, group: str, kinds: Collection[str], *, member: str | None = None
    ) -> KindConsumer:
        """Join ``group`` as a member that is handed the records of ``kinds`` only; the
        others are read past unseen, and a commit of ``covered()`` moves past them too.
        A backend that can skip them without decoding them overrides this."""
        return KindFilter(self.consumer(group, member=member), kinds)

    def purge_keys(self, wheres: Mapping[str, Callable[[Record], bool] | None]) -> dict[str, int]:
        """``purge_key`` for many keys (a burst of erasures); records removed per key."""
        return {key: self.purge_key(key, where) for key, where in wheres.items()}

    def count_keys(
        self, wheres: Mapping[str, Callable[[Record], bool] | None]
    ) -> dict[str, int] | None:
        """Records of each key (those ``where`` selects) still in the log, by a scan that
        does not trust the purge: erasure evidence. None where the bus cannot count."""
        del wheres
        return None

    def search_partitions(
        self,
        partitions: Collection[int],
        holds: Callable[[bytes], bool],
        keep: Callable[[Record], bool],
        *,
        ids: Collection[str] = (),
    ) -> list[Record] | None:
        """Every record now stored in ``partitions`` that ``keep`` accepts, whatever its
        key (the erasure verification's own read: a copy under another key is found
        too). ``holds`` is true of any bytes that contain such a record (keys and values
        are stored verbatim): a backend may test a whole stored batch with it before
        decoding. Every such record's bytes contain one of ``ids`` too, if any are
        given: a backend may let its own engine skip what holds none. None where the
        bus cannot read its log back."""
        del partitions, holds, keep, ids
        return None

    def find_event_ids(
        self, ids_by_key: Mapping[str, Collection[str]], since_ms: int
    ) -> set[str] | None:
        """Which of these event ids (of signals keyed by each key) the log holds among
        the records appended since ``since_ms``; None where the bus cannot look. Rare:
        a gateway asks after another died between the bus's acknowledgement and
        recording it."""
        del ids_by_key, since_ms
        return None

    def purge_recent(
        self, wheres: Mapping[str, Callable[[Record], bool] | None], since_ms: int
    ) -> dict[str, int] | None:
        """``purge_keys`` over what was appended since ``since_ms`` only; None where the
        bus cannot look at a recent stretch alone (the caller purges the whole keys)."""
        del wheres, since_ms
        return None

    def purge_indexed(
        self, kind: str, wheres: Mapping[str, Callable[[Record], bool] | None]
    ) -> dict[str, int] | None:
        """``purge_keys`` for the records of ``kind`` only (a kind other than signals:
        erasure events), found without a scan of the log where the backend keeps an
        index of where it appended them; None where it keeps none (the caller purges
        by ``purge_recent`` or ``purge_keys``)."""
        del kind, wheres
        return None

    def close(self) -> None:
        """Release connections."""
        ...


def committed_positions(records: Sequence[Record]) -> dict[int, int]:
    """The commit that covers ``records``: one past the highest offset per partition."""
    if type(records) is RecordBatch:
        return records.positions()
    positions: dict[int, int] = {}
    for r in records:
        if r.offset >= positions.get(r.partition, -1):
            positions[r.partition] = r.offset + 1
    return positions


def in_partitions(records: Sequence[Record], partitions: Collection[int]) -> Sequence[Record]:
    """``records`` of ``partitions`` only: ``records`` itself when all of them are."""
    if type(records) is RecordBatch and records.partitions() <= set(partitions):
        return records
    return [r for r in records if r.partition in partitions]


def kinds_of(records: Sequence[Record]) -> set[str]:
    """The kinds among ``records``."""
    if type(records) is RecordBatch:
        return records.kinds()
    return {r.kind for r in records}


def keys_of(records: Sequence[Record]) -> set[str]:
    """The keys among ``records``."""
    if type(records) is RecordBatch:
        return records.keys()
    return {r.key for r in records}


def joined(polls: Sequence[Sequence[Record]]) -> Sequence[Record]:
    """The records of several polls, in order, as one sequence (a ``RecordBatch`` when
    they all are)."""
    if len(polls) == 1:
        return polls[0]
    if all(type(p) is RecordBatch for p in polls):
        out = RecordBatch(Record)
        for poll in polls:
            out.extend(poll)  # type: ignore[arg-type]
        return out
    return [r for poll in polls for r in poll]

"""The embedded bus: a partitioned log in one SQLite file (WAL, fsync before ack).

Each publish appends one row per touched partition holding that partition's records
as one MessagePack array (a record batch, as Kafka stores them), so consumers decode
a whole batch in one C call. Several processes may publish and consume the same file;
``BEGIN IMMEDIATE`` serialises writers, WAL lets readers proceed.

Group membership lives in the file too: members heartbeat, and each takes the
partitions ``p`` with ``p % members == rank`` among the live members, sorted by id.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import lru_cache
from itertools import chain
from typing import Any

import msgspec

from headwater._duration import parse_duration
from headwater._gc import collector_paused
from headwater._url import sqlite_path
from headwater.bus._options import BusOptions
from headwater.bus._sqlite_conn import LogConnection
from headwater.bus._sqlite_keys import DECODE_BATCH, ENCODE_BATCH, INDEX_RARE, LogKeys
from headwater.bus.base import (
    KIND_SIGNAL,
    Bus,
    ErasureCapability,
    Message,
    PartitionLag,
    Record,
    RecordBatch,
    partition_for,
)
from headwater.errors import ConfigurationError
from headwater.metrics import BUS_EXPIRED_UNREAD

try:  # compiled (setup.py): stored batches written without a tuple per record
    from headwater.bus._batch import write_batches

    _COMPILED_WRITER = True
except ImportError:  # pragma: no cover - installed without a C compiler
    _COMPILED_WRITER = False

__all__ = ["SqliteBus", "SqliteConsumer"]

log = logging.getLogger("headwater.bus.sqlite")

#: The batches of partition ?1 from the one that holds offset ?2 on. Batches of a
#: partition never overlap, so none before the last one starting at or below ?2 can hold
#: it: the key range starts there, not at the log's head (last_offset is not indexed; a
#: scan from the head grew with the log, under the lock the publishers take).
_FROM_OFFSET = (
    "partition = ?1 AND first_offset >= COALESCE((SELECT MAX(first_offset) FROM hw_bus_log "
    "WHERE partition = ?1 AND first_offset <= ?2), 0) AND last_offset >= ?2"
)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hw_bus_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # A rowid table, its key in an index of its own. A stored batch is tens of KB, far
    # past what a page holds in place: in a WITHOUT ROWID table every interior cell of
    # the B-tree is a whole row, and SQLite copies a row's whole payload, its overflow
    # pages too, to compare a key against it, at every level of every insert and read.
    # (A log created as WITHOUT ROWID by an earlier release keeps that layout; the
    # statements are the same on both.) bench/bench_bus_sqlite.py.
    """CREATE TABLE IF NOT EXISTS hw_bus_log (
        partition INTEGER NOT NULL,
        first_offset INTEGER NOT NULL,
        last_offset INTEGER NOT NULL,
        ts_ms INTEGER NOT NULL,
        records BLOB NOT NULL,
        PRIMARY KEY (partition, first_offset)
    )""",
    "CREATE INDEX IF NOT EXISTS hw_bus_log_ts ON hw_bus_log (ts_ms)",
    # Where each record of a kind other than signals is (erasure events: a few a second
    # at most), so that purging them reads their batches only, not the log.
    """CREATE TABLE IF NOT EXISTS hw_bus_rare (
        kind TEXT NOT NULL, key TEXT NOT NULL, partition INTEGER NOT NULL,
        first_offset INTEGER NOT NULL,
        PRIMARY KEY (kind, key, partition, first_offset)) WITHOUT ROWID""",
    # The entries of a batch the retention drops, found without a scan of the table.
    "CREATE INDEX IF NOT EXISTS hw_bus_rare_batch ON hw_bus_rare (partition, first_offset)",
    """CREATE TABLE IF NOT EXISTS hw_bus_ends (
        partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS hw_bus_commits (
        grp TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
        PRIMARY KEY (grp, partition))""",
    """CREATE TABLE IF NOT EXISTS hw_bus_members (
        grp TEXT NOT NULL, member TEXT NOT NULL, heartbeat_ms INTEGER NOT NULL,
        PRIMARY KEY (grp, member))""",
)


#: A member not seen for this long has left; its partitions move to the others
#: (``?session_timeout=10s`` in the URL).
SESSION_TIMEOUT_S = 10.0
#: How often a member heartbeats and re-reads the group's membership (``?heartbeat=0.5s``).
HEARTBEAT_S = 0.5
#: Each publish drops, in its own transaction, up to this many times the stored batches
#: it adds (at least ``RETENTION_DROP_MIN``) among those older than the retention, oldest
#: first: the log sheds its records as fast as they come, a few at each publish. A sweep
#: a minute of everything expired held the writer for seconds (4.8 s at 75,000 events/s
#: and a retention of 10 s: bench/bench_bus_retention.py), and every publish behind it.
RETENTION_DROP_PER_BATCH = 2
RETENTION_DROP_MIN = 16
_DROP_OLDEST = (
    "DELETE FROM hw_bus_log WHERE (partition, first_offset) IN (SELECT partition, "
    "first_offset FROM hw_bus_log WHERE ts_ms < ? ORDER BY ts_ms LIMIT ?) "
    "RETURNING partition, first_offset"
)
_DROP_RARE = (
    "DELETE FROM hw_bus_rare WHERE NOT EXISTS (SELECT 1 FROM hw_bus_log l "
    "WHERE l.partition = hw_bus_rare.partition AND l.first_offset = hw_bus_rare.first_offset)"
)
#: URL options this backend reads besides partitions, retention and topic.
_OPTIONS = ("session_timeout", "heartbeat")
#: Page cache of a consumer's connection (KB).
CONSUMER_CACHE_KB = 4096


def _group_py(
    messages: Sequence[Message], partitions: int, signal_kind: str
) -> tuple[dict[int, list[Message]], list[tuple[int, Message]]]:
    """The messages by partition, and those of a kind other than signals with theirs."""
    grouped: dict[int, list[Message]] = {}
    rare: list[tuple[int, Message]] = []
    for m in messages:
        part = partition_for(m.key, partitions)
        grouped.setdefault(part, []).append(m)
        if m.kind != signal_kind:
            rare.append((part, m))
    return grouped, rare


def _encode_py(group: list[Message], part: int, start: int, ts: int) -> bytes:
    """A stored batch: each record as the array a Record encodes to (``array_like``),
    without a Record object per message."""
    return ENCODE_BATCH(
        [(part, start + i, m.key, m.kind, m.value, ts) for i, m in enumerate(group)]
    )


def _write_batches_py(
    messages: Sequence[Message], partitions: int, signal_kind: str, ends: dict[int, int], ts: int
) -> tuple[list[tuple[int, int, int, int, bytes]], list[tuple[int, Message]]]:
    """The stored batch of each partition the messages go to, by partition (``(partition,
    first offset, last offset, time, batch)``, numbered from ``ends``), and the messages
    of a kind other than signals with their partition."""
    grouped, rare = _group_py(messages, partitions, signal_kind)
    rows = []
    for part in sorted(grouped):
        group, start = grouped[part], ends[part]
        rows.append((part, start, start + len(group) - 1, ts, _encode_py(group, part, start, ts)))
    return rows, rare


#: The compiled writer where it is built: the same partitions and the same bytes, in one
#: pass over the messages (tests/bus/test_sqlite_writer.py).
_write_batches = write_batches if _COMPILED_WRITER else _write_batches_py


@lru_cache(maxsize=256)
def _append_sql(batches: int) -> str:
    """One statement for a publish's stored batches, one per partition it touches."""
    return "INSERT INTO hw_bus_log VALUES " + ",".join(["(?, ?, ?, ?, ?)"] * batches)


@lru_cache(maxsize=256)
def _move_ends_sql(partitions: int) -> str:
    """One statement moving the next offset of ``partitions`` partitions."""
    return (
        "INSERT INTO hw_bus_ends (partition, next_offset) VALUES "
        + ",".join(["(?, ?)"] * partitions)
        + " ON CONFLICT (partition) DO UPDATE SET next_offset = excluded.next_offset"
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _index_rare(conn: sqlite3.Connection) -> None:
    """Index every stored record of a kind other than signals, once per log, and mark the
    index complete: a member of some kinds then reads only the batches the index names.
    A new log has nothing to index; a log written before the index existed (or before
    it was marked complete) is read whole once, inside the opening transaction."""
    found: list[tuple[str, str, int, int]] = []
    for part, first, blob in conn.execute(
        "SELECT partition, first_offset, records FROM hw_bus_log ORDER BY partition, first_offset"
    ):
        found.extend(
            (r.kind, r.key, part, first) for r in DECODE_BATCH(blob) if r.kind != KIND_SIGNAL
        )
    if found:
        log.info("SQLite bus: %d records of rare kinds indexed", len(found))
    conn.executemany(INDEX_RARE, found)
    conn.execute("INSERT INTO hw_bus_meta VALUES ('rare_index', 'complete')")


class SqliteBus(Bus):
    """The embedded default bus, selected by ``sqlite:///path/bus.db``."""

    def __init__(
        self, url: str, *, partitions: int | None = None, retention_s: float | None = None
    ) -> None:
        self.url = url
        self.options = BusOptions.from_url(url, partitions=partitions, retention_s=retention_s)
        self.options.refuse_unknown(url, _OPTIONS)
        self._path = sqlite_path(url)
        if self._path == ":memory:":
            raise ConfigurationError("the SQLite bus needs a file (other processes read it)")
        self._db = LogConnection(self._path)
        #: No batch is past the retention before this time (ms since the epoch): until
        #: then a publish does not look (batches are stamped when published, so the
        #: oldest one's stamp tells).
        self._drop_at_ms = 0
        self._retention_ms = int(self.options.retention_s * 1000)
        extra = self.options.extra
        self.session_timeout_s = parse_duration(
            extra.get("session_timeout", SESSION_TIMEOUT_S), f"{url} session_timeout"
        )
        self.heartbeat_s = parse_duration(extra.get("heartbeat", HEARTBEAT_S), f"{url} heartbeat")
        with self._db.write() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
            row = conn.execute("SELECT value FROM hw_bus_meta WHERE name = 'partitions'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO hw_bus_meta VALUES ('partitions', ?)",
                    (str(self.options.partitions),),
                )
                conn.executemany(
                    "INSERT INTO hw_bus_ends VALUES (?, 0)",
                    [(p,) for p in range(self.options.partitions)],
                )
                stored = self.options.partitions
            else:
                stored = int(str(row[0]))
            if (
                conn.execute("SELECT 1 FROM hw_bus_meta WHERE name = 'rare_index'").fetchone()
                is None
            ):
                _index_rare(conn)
        if self.options.partitions_given and self.options.partitions != stored:
            raise ConfigurationError(
                f"{url} was created with {stored} partitions; it cannot be read as "
                f"{self.options.partitions} (drop ?partitions= to use the file's count)"
            )
        # The file's partition count wins: keys must keep mapping to the same partition.
        self.partitions = stored
        # The records of given keys: purges, counts, the verification's read-back.
        self._keys = LogKeys(self._db, stored)

    def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        ts = _now_ms()
        with self._db.write() as conn:
            # Every partition's next offset, the batches written and the offsets moved:
            # three statements, however many partitions the messages go to, up to the
            # SQLite build's bound on parameters (five a batch: 199 partitions where it
            # binds 999, 6,553 at 32,766); past it, the last two are cut.
            ends = dict(conn.execute("SELECT partition, next_offset FROM hw_bus_ends"))
            rows, rare = _write_batches(messages, self.partitions, KIND_SIGNAL, ends, ts)
            most = max(1, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 5)
            for first in range(0, len(rows), most):
                chunk = rows[first : first + most]
                conn.execute(_append_sql(len(chunk)), tuple(chain.from_iterable(chunk)))
                conn.execute(
                    _move_ends_sql(len(chunk)),
                    tuple(chain.from_iterable((row[0], row[2] + 1) for row in chunk)),
                )
            if rare:
                starts = {row[0]: row[1] for row in rows}
                conn.executemany(
                    INDEX_RARE, [(m.kind, m.key, part, starts[part]) for part, m in rare]
                )
            self._drop_expired(conn, len(rows), ts)

    def _drop_expired(self, conn: sqlite3.Connection, added: int, now: int) -> None:
        """Drop up to ``RETENTION_DROP_PER_BATCH`` times ``added`` of the oldest batches
        past the retention at ``now`` (ms), and where ``hw_bus_rare`` points into them;
        nothing to do, and no statement, until the oldest batch left reaches the
        retention."""
        if now < self._drop_at_ms:
            return
        retention_ms = self._retention_ms
        limit = max(RETENTION_DROP_MIN, RETENTION_DROP_PER_BATCH * added)
        dropped = conn.execute(_DROP_OLDEST, (now - retention_ms, limit)).fetchall()
        if dropped:
            conn.executemany(
                "DELETE FROM hw_bus_rare WHERE partition = ? AND first_offset = ?", dropped
            )
        if len(dropped) < limit:  # none past the retention is left
            (oldest,) = conn.execute("SELECT MIN(ts_ms) FROM hw_bus_log").fetchone()
            self._drop_at_ms = (now if oldest is None else int(oldest)) + retention_ms

    def enforce_retention(self) -> int:
        """Drop every record batch older than the retention now; the number of batches
        dropped. (Each publish drops some as it goes.)"""
        cutoff = _now_ms() - self._retention_ms
        with self._db.write() as conn:
            dropped = conn.execute("DELETE FROM hw_bus_log WHERE ts_ms < ?", (cutoff,)).rowcount
            if dropped:
                conn.execute(_DROP_RARE)
            return int(dropped)

    def partition_of(self, key: str) -> int:
        return partition_for(key, self.partitions)

    def consumer(self, group: str, *, member: str | None = None) -> SqliteConsumer:
        return SqliteConsumer(self, group, member or _member_name())

    def kind_consumer(
        self, group: str, kinds: Collection[str], *, member: str | None = None
    ) -> SqliteConsumer:
        """A member that steps over, undecoded, every stored batch without a record of
        ``kinds``."""
        return SqliteConsumer(self, group, member or _member_name(), kinds=kinds)

    def lag(self, group: str) -> list[PartitionLag]:
        ends = dict(self._db.read("SELECT partition, next_offset FROM hw_bus_ends"))
        commits = dict(
            self._db.read(
                "SELECT partition, next_offset FROM hw_bus_commits WHERE grp = ?", (group,)
            )
        )
        now = _now_ms()
        out = []
        for part in range(self.partitions):
            end = int(ends.get(part, 0))
            committed = int(commits.get(part, 0))
            # Records the retention dropped before the group read them are not behind it:
            # they cannot be read (the member that reads past them counts them).
            ((kept,),) = self._db.read(
                "SELECT MIN(first_offset) FROM hw_bus_log WHERE partition = ?", (part,)
            )
            unread = end - max(committed, end if kept is None else int(kept))
            seconds = 0.0
            if committed < end:
                # The first batch holding an offset at or past the committed one, found
                # by key as a poll finds it.
                row = self._db.read(
                    f"SELECT ts_ms FROM hw_bus_log WHERE {_FROM_OFFSET} "
                    "ORDER BY first_offset LIMIT 1",
                    (part, committed),
                )
                if row:
                    seconds = max(0.0, (now - int(row[0][0])) / 1000)
            out.append(PartitionLag(group, part, committed, end, max(0, unread), seconds))
        return out

    def erasure_capability(self) -> ErasureCapability:
        return ErasureCapability(
            can_purge=True,
            method="purge",
            retention_seconds=self.options.retention_s,
            detail="records of the key are deleted from the log file and the file is "
            "checkpointed, so no page holds them",
        )

    def purge_key(self, key: str, where: Callable[[Record], bool] | None = None) -> int:
        return self._keys.purge_key(key, where)

    def purge_keys(self, wheres: Mapping[str, Callable[[Record], bool] | None]) -> dict[str, int]:
        return self._keys.purge_keys(wheres)

    def purge_recent(
        self, wheres: Mapping[str, Callable[[Record], bool] | None], since_ms: int
    ) -> dict[str, int]:
        return self._keys.purge_recent(wheres, since_ms)

    def purge_indexed(
        self, kind: str, wheres: Mapping[str, Callable[[Record], bool] | None]
    ) -> dict[str, int]:
        return self._keys.purge_indexed(kind, wheres)

    def find_event_ids(self, ids_by_key: Mapping[str, Collection[str]], since_ms: int) -> set[str]:
        return self._keys.find_event_ids(ids_by_key, since_ms)

    def count_key(self, key: str, where: Callable[[Record], bool] | None = None) -> int:
        """Records of ``key`` still in the log (an independent scan, for erasure evidence)."""
        return self._keys.count_key(key, where)

    def count_keys(self, wheres: Mapping[str, Callable[[Record], bool] | None]) -> dict[str, int]:
        return self._keys.count_keys(wheres)

    def search_partitions(
        self,
        partitions: Collection[int],
        holds: Callable[[bytes], bool],
        keep: Callable[[Record], bool],
        *,
        ids: Collection[str] = (),
    ) -> list[Record]:
        del ids  # a page's bytes searched at once cost less than SQLite's search per id
        return self._keys.search_partitions(partitions, holds, keep)

    def close(self) -> None:
        self._db.close()


def _member_name() -> str:
    """A member's name when the caller gives none: unique per process and join."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


class SqliteConsumer:
    """One member of a consumer group on the SQLite bus."""

    def __init__(
        self, bus: SqliteBus, group: str, member: str, *, kinds: Collection[str] | None = None
    ) -> None:
        self.group = group
        self.member = member
        self._bus = bus
        # With ``kinds``, a stored batch that lacks every kind's bytes (each record's kind
        # is a MessagePack string in the batch, verbatim) is stepped over undecoded.
        self._kinds = None if kinds is None else frozenset(kinds)
        named = sorted(self._kinds or ())
        self._markers = tuple(msgspec.msgpack.encode(k) for k in named)
        # A member of kinds other than signals reads the records of the batches that
        # ``hw_bus_rare`` names only (complete since the bus opened: ``_index_rare``): the
        # others' rows are read without their records, which lie on overflow pages.
        self._rare = tuple(named) if named and KIND_SIGNAL not in named else ()
        self._records_sql = "records"
        if self._rare:
            marks = ", ".join(f"?{4 + i}" for i in range(len(self._rare)))
            self._records_sql = (
                "CASE WHEN EXISTS (SELECT 1 FROM hw_bus_rare r WHERE r.partition = ?1 AND "
                f"r.first_offset = hw_bus_log.first_offset AND r.kind IN ({marks})) "
                "THEN records END"
            )
        self._covered: dict[int, int] = {}
        # Own connection: consumers run in their own threads. A small page cache: a
        # consumer reads each record batch once, and a large cache only grows its RSS.
        # NORMAL: commits and heartbeats are not fsynced one by one (the next fsync of
        # the log, by any publisher, makes them durable). A commit lost in a power cut
        # only replays records, which every handler applies idempotently; a process
        # crash loses nothing. Each fsync held the bus's write lock, which publishes
        # (durable, FULL) then waited for.
        self._db = LogConnection(bus._path, cache_kb=CONSUMER_CACHE_KB, synchronous="NORMAL")
        self._assigned: list[int] = []
        self._position: dict[int, int] = {}
        self._next_heartbeat = 0.0
        self._cursor = 0
        self._closed = False
        self._heartbeat(force=True)

    def _heartbeat(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self._bus.heartbeat_s
        now_ms = _now_ms()
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO hw_bus_members VALUES (?, ?, ?) ON CONFLICT (grp, member) "
                "DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms",
                (self.group, self.member, now_ms),
            )
            conn.execute(
                "DELETE FROM hw_bus_members WHERE grp = ? AND heartbeat_ms < ?",
                (self.group, now_ms - int(self._bus.session_timeout_s * 1000)),
            )
            members = [
                m
                for (m,) in conn.execute(
                    "SELECT member FROM hw_bus_members WHERE grp = ? ORDER BY member", (self.group,)
                )
            ]
            rank = members.index(self.member)
            mine = [p for p in range(self._bus.partitions) if p % len(members) == rank]
            if mine != self._assigned:
                commits = dict(
                    conn.execute(
                        "SELECT partition, next_offset FROM hw_bus_commits WHERE grp = ?",
                        (self.group,),
                    ).fetchall()
                )
                # Newly gained partitions (and kept ones) restart from the committed position,
                # so nothing a previous owner read but did not commit is skipped.
                self._position = {p: int(commits.get(p, 0)) for p in mine}
                self._assigned = mine

    def assignment(self) -> set[int]:
        self._heartbeat()
        return set(self._assigned)

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> Sequence[Record]:
        """Up to ``max_records`` records; with ``kinds``, up to ``max_records`` offsets read
        past, and the records of those kinds among them. Where ``_batch`` is compiled, a
        member of all kinds returns a ``RecordBatch``: the stored batches read in place."""
        deadline = time.monotonic() + timeout
        self._covered = {}
        while True:
            self._heartbeat()
            # A member of every kind reads into ``out`` (``_bus_read``); a kinds member
            # gathers its kinds' records in ``kept``.
            out: list[Record] | RecordBatch = (
                RecordBatch(Record) if RecordBatch is not None and self._kinds is None else []
            )
            kept: list[Record] = []
            used = 0
            parts = self._assigned
            # One query says which partitions have anything new: an idle member no
            # longer queries the log of every partition every 5 ms.
            ends = dict(self._db.read("SELECT partition, next_offset FROM hw_bus_ends"))
            # Rotate the starting partition so no partition starves the others.
            for i in range(len(parts)):
                part = parts[(self._cursor + i) % len(parts)]
                want = max_records - used
                if want <= 0:
                    break
                start = self._position[part]
                if ends.get(part, start + 1) <= start:
                    continue
                if self._kinds is None:
                    got, self._position[part] = self._bus_read(part, start, want, out)
                    used += got
                else:
                    self._position[part] = self._kinds_read(part, start, want, kept)
                    used += self._position[part] - start
                if self._position[part] != start:
                    self._covered[part] = self._position[part]
            self._cursor += 1
            if self._kinds is not None:
                out = kept
            # A kinds member returns once it read past anything, so that it is committed.
            if out or (self._kinds is not None and self._covered):
                return out
            if time.monotonic() >= deadline:
                return out
            time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))

    def covered(self) -> dict[int, int]:
        return dict(self._covered)

    def _kinds_read(self, part: int, offset: int, want: int, out: list[Record]) -> int:
        """The records of ``kinds`` among offsets [offset, offset + want) (and the rest of
        the last batch) added to ``out``; the offset to read next."""
        rows = self._batches(part, offset, want)
        kinds, markers = self._kinds or frozenset(), self._markers
        following = offset
        for _first, last, blob in rows:
            following = int(last) + 1
            if blob is not None and any(m in blob for m in markers):
                out.extend(r for r in DECODE_BATCH(blob) if r.offset >= offset and r.kind in kinds)
        return following

    def _batches(self, part: int, offset: int, want: int) -> list[Any]:
        """The stored batches that hold offsets [offset, offset + want): ``(first_offset,
        last_offset, records)``, in order (no decoding to discard). Where the retention dropped the
        batches from ``offset`` on before this group read them, those from the first batch
        kept: the group reads on from there, and the records it never read are logged."""
        sql = (
            f"SELECT first_offset, last_offset, {self._records_sql} FROM hw_bus_log WHERE "
            f"{_FROM_OFFSET} AND first_offset < ?3 ORDER BY first_offset"
        )
        rows = self._db.read(sql, (part, offset, offset + want, *self._rare))
        if not rows:
            ((kept,),) = self._db.read(
                "SELECT MIN(first_offset) FROM hw_bus_log WHERE partition = ? AND first_offset > ?",
                (part, offset),
            )
            if kept is None:
                return []
            rows = self._db.read(sql, (part, int(kept), int(kept) + want, *self._rare))
        # The batch that holds ``offset`` starts at or before it, and a purge keeps a batch
        # it empties: a first batch that starts after it means the retention left a gap.
        if rows and int(rows[0][0]) > offset:
            BUS_EXPIRED_UNREAD.labels(self.group, str(part)).inc(int(rows[0][0]) - offset)
            log.warning(
                "group %r, partition %d: records %d to %d were dropped by the retention "
                "before the group read them; reading on from %d",
                self.group,
                part,
                offset,
                int(rows[0][0]) - 1,
                int(rows[0][0]),
            )
        return rows

    def _bus_read(
        self, part: int, offset: int, want: int, out: list[Record] | RecordBatch
    ) -> tuple[int, int]:
        """Up to ``want`` records from ``offset`` on added to ``out``: their number, and the
        offset to read next."""
        rows = self._batches(part, offset, want)
        got = 0
        following = offset
        if isinstance(out, list):
            records: list[Record] = []
            # A Record per record and no cycles: the collector would run every 700 of them.
            with collector_paused():
                for _first, last, blob in rows:
                    decoded = DECODE_BATCH(blob)
                    if decoded and decoded[0].offset < offset:
                        decoded = [r for r in decoded if r.offset >= offset]
                    records.extend(decoded)
                    # Past the whole batch, even one a purge emptied: reading resumes after it.
                    following = int(last) + 1
                    if len(records) >= want:
                        break
            del records[want:]
            if len(records) == want:
                following = records[-1].offset + 1
            out.extend(records)
            return len(records), following
        for _first, last, blob in rows:
            got += out.add(blob, offset, want - got, DECODE_BATCH)
            following = int(last) + 1
            if got >= want:
                following = out.last_offset() + 1
                break
        return got, following

    def commit(self, positions: Mapping[int, int]) -> None:
        if not positions:
            return
        with self._db.write() as conn:
            # MAX: a member that lost a partition mid-batch can never move the group back.
            conn.executemany(
                "INSERT INTO hw_bus_commits VALUES (?, ?, ?) ON CONFLICT (grp, partition) "
                "DO UPDATE SET next_offset = MAX(next_offset, excluded.next_offset)",
                [(self.group, p, o) for p, o in positions.items()],
            )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._db.write() as conn:
            conn.execute(
                "DELETE FROM hw_bus_members WHERE grp = ? AND member = ?", (self.group, self.member)
            )
        self._db.close()

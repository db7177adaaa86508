"""What the SQLite log holds of given keys: the erasure side of the embedded bus.

The bus's purges (by key, over a recent stretch, or through the index of the records of
kinds other than signals), its counts, its search for event ids and its read-back for
the erasure verification. Each reads the log without the write lock and rewrites the
batches it must change under it; the bus (``headwater.bus.sqlite``) delegates to
:class:`LogKeys`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import msgspec

from headwater._sqlite import scrub_for_erasure
from headwater.bus._sqlite_conn import LogConnection
from headwater.bus.base import KIND_SIGNAL, Record, partition_for
from headwater.contract.signal import event_id_of
from headwater.errors import BusError

__all__ = ["DECODE_BATCH", "ENCODE_BATCH", "INDEX_RARE", "LogKeys"]

#: A stored batch: its records as one MessagePack array.
ENCODE_BATCH = msgspec.msgpack.Encoder().encode
DECODE_BATCH = msgspec.msgpack.Decoder(list[Record]).decode
#: Where a record of a kind other than signals is: ``(kind, key, partition, first_offset
#: of its stored batch)``.
INDEX_RARE = "INSERT OR IGNORE INTO hw_bus_rare VALUES (?, ?, ?, ?)"

#: Up to this many keys, batches are found by a byte search per key; above, by decoding.
_FEW_KEYS = 4
#: Batches read at a time by scans that decode them.
_PAGE = 256
#: Keys bound in one ``IN (...)`` list (SQLite's limit on variables is far above).
_IN_AT_MOST = 500


class LogKeys:
    """The records of given keys in one log file: found, counted, purged."""

    def __init__(self, db: LogConnection, partitions: int) -> None:
        self.db = db
        self.partitions = partitions

    def _first_since(self, part: int, since_ms: int) -> int | None:
        """The first offset of the partition's first batch appended at or after
        ``since_ms`` (None: none since)."""
        (found,) = self.db.read(
            "SELECT MIN(first_offset) FROM hw_bus_log INDEXED BY hw_bus_log_ts "
            "WHERE ts_ms >= ? AND partition = ?",
            (since_ms, part),
        )[0]
        return None if found is None else int(found)

    def scrub(self) -> None:
        """After a purge: freed pages are zeroed (secure_delete); old page images of the
        rewritten rows linger in the WAL until it is checkpointed and truncated."""
        scrub_for_erasure(
            self.db.conn, self.db.lock, BusError, "SQLite bus: checkpoint after purge failed"
        )

    def purge_key(self, key: str, where: Callable[[Record], bool] | None = None) -> int:
        return self._purge({key: where}, since_ms=None)[key]

    def purge_keys(self, wheres: Mapping[str, Callable[[Record], bool] | None]) -> dict[str, int]:
        """``purge_key`` for many keys at once: one scan of each partition, one checkpoint.

        A burst of erasures is applied as one pass over the log, not one pass per user.
        Returns the records removed per key.
        """
        return self._purge(wheres, since_ms=None)

    def purge_recent(
        self, wheres: Mapping[str, Callable[[Record], bool] | None], since_ms: int
    ) -> dict[str, int]:
        """``purge_keys`` over the batches appended at or after ``since_ms`` only: a range
        of the log instead of the whole partitions, for records known to be recent (the
        erasure events of the requests a pass closes: one scan, one checkpoint)."""
        return self._purge(wheres, since_ms=since_ms)

    def _purge(
        self, wheres: Mapping[str, Callable[[Record], bool] | None], since_ms: int | None
    ) -> dict[str, int]:
        removed = dict.fromkeys(wheres, 0)
        by_part: dict[int, list[str]] = {}
        for key in wheres:
            by_part.setdefault(partition_for(key, self.partitions), []).append(key)
        for part, keys in sorted(by_part.items()):
            self._purge_part(part, {k: wheres[k] for k in keys}, since_ms, removed)
        if any(removed.values()):
            self.scrub()
        return removed

    def _purge_part(
        self,
        part: int,
        wheres: Mapping[str, Callable[[Record], bool] | None],
        since_ms: int | None,
        removed: dict[str, int],
    ) -> None:
        start = 0
        if since_ms is not None:
            found = self._first_since(part, since_ms)
            if found is None:
                return
            start = found
        # Found without the write lock: publishing goes on meanwhile.
        scanned = _batches_with(self.db.read, part, wheres, start)
        (last,) = self.db.read(
            "SELECT COALESCE(MAX(first_offset), -1) FROM hw_bus_log WHERE partition = ?", (part,)
        )[0]
        with self.db.write() as conn:
            # Batches appended since the scan are looked at too: the same batches as a
            # scan under the lock (a batch without the key never gains it).
            newer = _batches_with(
                lambda sql, params: conn.execute(sql, tuple(params)).fetchall(),
                part,
                wheres,
                int(last) + 1,
            )
            _rewrite(conn, part, [*scanned, *newer], wheres, removed)

    def purge_indexed(
        self, kind: str, wheres: Mapping[str, Callable[[Record], bool] | None]
    ) -> dict[str, int]:
        """``purge_keys`` for the records of ``kind`` (not signals) only, found through
        the log's index of where each such record was appended: the batches that hold
        them are read, not the log. One checkpoint for all."""
        if kind == KIND_SIGNAL:
            raise BusError("signals are not indexed by key: purge them with purge_keys")
        removed = dict.fromkeys(wheres, 0)
        keys = list(wheres)
        with self.db.write() as conn:
            found: dict[int, set[int]] = {}
            for first in range(0, len(keys), _IN_AT_MOST):
                chunk = keys[first : first + _IN_AT_MOST]
                # Every row of these keys goes: those the purge leaves a record for are
                # written again below.
                for part, offset in conn.execute(
                    "DELETE FROM hw_bus_rare WHERE kind = ? AND key IN "
                    f"({', '.join('?' * len(chunk))}) RETURNING partition, first_offset",
                    (kind, *chunk),
                ).fetchall():
                    found.setdefault(int(part), set()).add(int(offset))

            def of_kind(where: Callable[[Record], bool] | None) -> Callable[[Record], bool]:
                return lambda r: r.kind == kind and (where is None or where(r))

            selected = {key: of_kind(where) for key, where in wheres.items()}
            still: list[tuple[str, str, int, int]] = []
            for part, offsets in sorted(found.items()):
                for first, kept in _rewrite(conn, part, sorted(offsets), selected, removed).items():
                    # A record of the kind the predicates kept stays indexed.
                    still.extend(
                        (kind, key, part, first)
                        for key in {r.key for r in kept if r.kind == kind and r.key in wheres}
                    )
            conn.executemany(INDEX_RARE, still)
        # The index named the keys too: its deleted rows go the way of the records.
        if any(removed.values()) or found:
            self.scrub()
        return removed

    def find_event_ids(self, ids_by_key: Mapping[str, Collection[str]], since_ms: int) -> set[str]:
        """The signals among ``ids_by_key`` appended since ``since_ms`` (the batches of
        that stretch of each key's partition, decoded)."""
        found: set[str] = set()
        by_part: dict[int, list[str]] = {}
        for key in ids_by_key:
            by_part.setdefault(partition_for(key, self.partitions), []).append(key)
        for part, keys in sorted(by_part.items()):
            start = self._first_since(part, since_ms)
            if start is None:
                continue
            for _first, records in _candidates(self.db.read, part, set(keys), start):
                for r in records:
                    wanted = ids_by_key.get(r.key)
                    if wanted and r.kind == KIND_SIGNAL:
                        event_id = event_id_of(r.value)
                        if event_id in wanted:
                            found.add(event_id)
        return found

    def count_key(self, key: str, where: Callable[[Record], bool] | None = None) -> int:
        """Records of ``key`` still in the log (an independent scan, for erasure evidence)."""
        return self.count_keys({key: where})[key]

    def count_keys(self, wheres: Mapping[str, Callable[[Record], bool] | None]) -> dict[str, int]:
        """``count_key`` for many keys: one scan of each partition."""
        counts = dict.fromkeys(wheres, 0)
        by_part: dict[int, list[str]] = {}
        for key in wheres:
            by_part.setdefault(partition_for(key, self.partitions), []).append(key)
        for part, keys in sorted(by_part.items()):
            for _first, records in _candidates(self.db.read, part, set(keys), 0):
                for r in records:
                    if r.key in counts:
                        where = wheres[r.key]
                        if where is None or where(r):
                            counts[r.key] += 1
        return counts

    def search_partitions(
        self,
        partitions: Collection[int],
        holds: Callable[[bytes], bool],
        keep: Callable[[Record], bool],
    ) -> list[Record]:
        """The partitions' stored batches tested with ``holds``, a page of them at a time
        (most pages hold none of what is looked for: one search of the page's bytes
        answers), then each batch of a page that may; those it holds decoded, each
        record offered to ``keep``. (A byte search in SQLite per id cost more than this
        one pass, and grew with the ids times the partitions.)"""
        found: list[Record] = []
        for part in sorted(set(partitions)):
            for rows in _page_rows(self.db.read, part, 0):
                page = [blob for _first, blob in rows]
                # A byte that is in no id keeps two batches' ends from forming a match.
                if not holds(b"\x00".join(page)):
                    continue
                found.extend(
                    r for blob in page if holds(blob) for r in DECODE_BATCH(blob) if keep(r)
                )
        return found


_Read = Callable[[str, Sequence[object]], list[Any]]


def _candidates(
    read: _Read, part: int, keys: Collection[str], start: int
) -> Iterator[tuple[int, list[Record]]]:
    """The partition's batches from ``start`` on that may hold a record of a key, decoded,
    with their first offsets (a batch may also hold other keys' records)."""
    for first, blob in _stored(read, part, keys, start):
        yield first, DECODE_BATCH(blob)


def _stored(
    read: _Read, part: int, keys: Collection[str], start: int
) -> Iterator[tuple[int, bytes]]:
    """The partition's stored batches from ``start`` on that may hold one of ``keys``'
    bytes (every batch for none or many), with their first offsets."""
    if 0 < len(keys) <= _FEW_KEYS:
        # A batch holding a record of a key holds its bytes (MessagePack stores strings
        # verbatim): SQLite finds those without handing every batch to Python.
        needles = [k.encode() for k in keys]
        match = " OR ".join(["instr(records, ?) > 0"] * len(needles))
        for first, blob in read(
            "SELECT first_offset, records FROM hw_bus_log WHERE partition = ? AND "
            f"first_offset >= ? AND ({match})",
            (part, start, *needles),
        ):
            yield int(first), blob
        return
    # Many keys (a burst of erasures): one pass that decodes each batch costs less than
    # one byte search of the whole partition per key.
    yield from _pages(read, part, start)


def _pages(read: _Read, part: int, start: int) -> Iterator[tuple[int, bytes]]:
    """The partition's batches from ``start`` on with their first offsets, read a page
    at a time: bounded memory."""
    for page in _page_rows(read, part, start):
        yield from page


def _page_rows(read: _Read, part: int, start: int) -> Iterator[list[tuple[int, bytes]]]:
    """The partition's batches from ``start`` on, ``_PAGE`` of them at a time, each with
    its first offset."""
    while True:
        page = read(
            "SELECT first_offset, records FROM hw_bus_log WHERE partition = ? AND "
            "first_offset >= ? ORDER BY first_offset LIMIT ?",
            (part, start, _PAGE),
        )
        if page:
            yield [(int(first), bytes(blob)) for first, blob in page]
        if len(page) < _PAGE:
            return
        start = int(page[-1][0]) + 1


def _rewrite(
    conn: Any,
    part: int,
    firsts: Sequence[int],
    wheres: Mapping[str, Callable[[Record], bool] | None],
    removed: dict[str, int],
) -> dict[int, list[Record]]:
    """Rewrite these batches of the partition without the records ``wheres`` selects
    (counted per key in ``removed``), inside the caller's write transaction; what each
    batch read still holds, by its first offset."""
    held: dict[int, list[Record]] = {}
    for first in firsts:
        row = conn.execute(
            "SELECT records FROM hw_bus_log WHERE partition = ? AND first_offset = ?",
            (part, first),
        ).fetchone()
        if row is None:
            continue  # dropped by the retention meanwhile
        records = DECODE_BATCH(row[0])
        kept = []
        for r in records:
            if r.key in wheres:
                where = wheres[r.key]
                if where is None or where(r):
                    removed[r.key] += 1
                    continue
            kept.append(r)
        held[first] = kept
        if len(kept) == len(records):
            continue
        # Offsets of the kept records do not change: positions stay valid.
        conn.execute(
            "UPDATE hw_bus_log SET records = ? WHERE partition = ? AND first_offset = ?",
            (ENCODE_BATCH(kept), part, first),
        )
    return held


def _batches_with(read: _Read, part: int, keys: Collection[str], start: int) -> list[int]:
    """First offsets of the partition's batches from ``start`` on holding any key."""
    return [
        first
        for first, records in _candidates(read, part, keys, start)
        if any(r.key in keys for r in records)
    ]

"""The embedded online store: one SQLite file, WAL, readers never block the writer."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from headwater._checkpoint import WalCheckpointer
from headwater._sqlite import connect, scrub_for_erasure
from headwater._url import sqlite_path
from headwater.errors import FencedError, OnlineStoreError
from headwater.online.base import Position

__all__ = ["SqliteOnlineStore"]

#: Rows lie in the order their keys were first written (their rowid), not in key order: the
#: users a stream's batch touches are mostly the active ones, which were written early and
#: so share pages, and a batch's commit writes a third fewer pages to the write-ahead log
#: than with rows in key order, where they sit on pages of their own
#: (``tests/online/test_sqlite_store.py::test_rows_lie_in_the_order_their_keys_were_first_written``,
#: BENCHMARKS.md, "The online store's rows in the order they were first written").
#: ``(ns, key)`` is found through its own index, which a row's update does not change.
#: The columns are those of the earlier layout, so a process of an earlier release that
#: shares the file keeps reading and writing it (``VACUUM`` may renumber rowids, in order).
_ROWS = (
    """CREATE TABLE IF NOT EXISTS hw_rows (
        ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS hw_rows_key ON hw_rows (ns, key)",
)
#: The layout of releases before 2026-12-06: rows in key order. Opening such a store
#: moves its rows into :data:`_ROWS` once, in one transaction.
_KEY_ORDERED = "WITHOUT ROWID"
_SCHEMA = (
    *_ROWS,
    """CREATE TABLE IF NOT EXISTS hw_positions (
        grp TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
        as_of_ms INTEGER NOT NULL, PRIMARY KEY (grp, partition))""",
    """CREATE TABLE IF NOT EXISTS hw_fences (
        grp TEXT NOT NULL, partition INTEGER NOT NULL, generation INTEGER NOT NULL,
        PRIMARY KEY (grp, partition))""",
    # Deletes so far, and how many of them the last rebuild of the file came after: a
    # delete counted in its own transaction, so a rebuild owed survives a crash and is
    # seen by every process that writes the file (see scrub).
    """CREATE TABLE IF NOT EXISTS hw_deletes (
        one INTEGER PRIMARY KEY CHECK (one = 1), deleted INTEGER NOT NULL,
        rebuilt INTEGER NOT NULL)""",
)
_CHUNK = 900  # below SQLite's bound on parameters per statement
#: The page size of a new store (an existing one keeps its own): SQLite's 4 KiB. A
#: consumer batch of a live stream rewrites rows spread over the table, and each page it
#: changes is written whole, to the write-ahead log and again at the checkpoint: with
#: 16 KiB pages (releases from 2026-12-05) the feature consumer wrote 128 MB/s to its
#: disk at 20,000 events/s, with 4 KiB 53 MB/s, for the same CPU and freshness; the
#: catch-up of a backlog (batches of 100,000, where most pages change either way) stays
#: at about 2.2-2.5 times the hand-written loop. bench/bench_freshness.py and
#: bench/bench_features.py (BENCHMARKS.md, "The online store's pages: 4 KiB again").
PAGE_SIZE = 4_096
#: About 40 MB of WAL between checkpoints, whatever the file's page size.
WAL_CHECKPOINT_BYTES = 40_960_000


class SqliteOnlineStore:
    """Rows and positions in ``sqlite:///path/online.db``."""

    local = True

    def __init__(self, url: str, *, cache_mb: int = 256) -> None:
        self.url = url
        self._lock = threading.RLock()
        #: The namespace and the rowid of each row the last ``get`` found (``_write_rows``).
        self._read: tuple[str, dict[str, int]] = ("", {})
        try:
            # Feature rows are derived from the bus and committed atomically with the
            # group's positions: a power loss that drops the last commits rolls rows and
            # positions back together, and the consumer re-applies those records. So a
            # row write need not wait for an fsync; deletes (erasure) do (``_synced``).
            path = sqlite_path(url)
            self._conn = connect(path, synchronous="NORMAL", page_size=PAGE_SIZE)
            # Random-key upserts into a large table need the pages in memory.
            self._conn.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")
            # A consumer batch rewrites rows on thousands of random pages. Checkpoint
            # every ~40 MB of WAL instead of the default 1,000 pages: a page rewritten by
            # several batches is copied back (and synced) once. This connection's own
            # checkpoints stop once the store writes rows (``_checkpointer``).
            (page,) = self._conn.execute("PRAGMA page_size").fetchone()
            self._conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_BYTES // page}")
            self._conn.execute(f"PRAGMA journal_size_limit={64 * 2**20}")
            self._create()
            #: Once this store writes rows, its checkpoints run on a thread of their own,
            #: not inside a batch's commit (``headwater._checkpoint``).
            self._checkpointer = (
                None
                if path == ":memory:"
                else WalCheckpointer(
                    path, self._conn, self._lock, threshold_bytes=WAL_CHECKPOINT_BYTES
                )
            )
        except sqlite3.Error as exc:
            raise OnlineStoreError(f"cannot open online store {url}: {exc}") from exc

    def _create(self) -> None:
        """Make the tables, moving the rows of a store in the earlier layout, in one
        transaction that every other process opening the file waits for."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            found = self._conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'hw_rows'"
            ).fetchone()
            if found is not None and _KEY_ORDERED in found[0].upper():
                self._conn.execute("ALTER TABLE hw_rows RENAME TO hw_rows_key_ordered")
                for statement in _ROWS:
                    self._conn.execute(statement)
                self._conn.execute(
                    "INSERT INTO hw_rows SELECT ns, key, value FROM hw_rows_key_ordered"
                )
                # secure_delete: the old table's pages are zeroed as they are freed.
                self._conn.execute("DROP TABLE hw_rows_key_ordered")
            for statement in _SCHEMA:
                self._conn.execute(statement)
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise OnlineStoreError(f"online store: {exc}") from exc

    def get(self, namespace: str, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        rowids: dict[str, int] = {}
        # In key order: each chunk's keys lie on neighbouring pages of the key index
        # instead of all over it (BENCHMARKS.md, "The feature reader's batch in place").
        ordered = sorted(keys)
        with self._lock:
            for start in range(0, len(ordered), _CHUNK):
                chunk = ordered[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for rowid, key, value in self._query(
                    f"SELECT rowid, key, value FROM hw_rows WHERE ns = ? AND key IN ({marks})",
                    (namespace, *chunk),
                ):
                    found[key] = value
                    rowids[key] = rowid
            # Where each row was, for a put of the same rows that follows (a consumer's
            # batch reads its users' rows, then writes them).
            self._read = (namespace, rowids)
        return found

    def put(
        self,
        namespace: str,
        rows: Mapping[str, bytes],
        *,
        group: str = "",
        positions: Mapping[int, Position] | None = None,
        fence: Mapping[int, int] | None = None,
    ) -> None:
        with self._lock:
            try:
                if self._checkpointer is not None:
                    self._checkpointer.before_write()
                self._conn.execute("BEGIN IMMEDIATE")
                if fence:
                    self._check_fence(group, fence)
                self._write_rows(namespace, rows)
                if positions:
                    self._conn.executemany(
                        "INSERT INTO hw_positions VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (grp, partition) DO UPDATE SET "
                        "next_offset = excluded.next_offset, as_of_ms = excluded.as_of_ms",
                        [(group, p, pos.next_offset, pos.as_of_ms) for p, pos in positions.items()],
                    )
                self._conn.execute("COMMIT")
                if self._checkpointer is not None:
                    self._checkpointer.committed(len(rows) + len(positions or ()))
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise OnlineStoreError(f"online store write failed: {exc}") from exc
            except FencedError:
                self._conn.execute("ROLLBACK")
                raise

    def _write_rows(self, namespace: str, rows: Mapping[str, bytes]) -> None:
        """Write ``rows`` inside the open transaction. A row the last ``get`` read is
        rewritten where it was read (by its rowid, which names its table page: no
        search of the key index, no conflict to resolve), in table order, provided it
        still holds the same key there; any other row, and every row again when one of
        those did not (deleted or moved since the read), is upserted by key."""
        read_ns, rowids = self._read
        if read_ns != namespace:
            rowids = {}  # read from another namespace: kept for a put to that one
        else:
            self._read = ("", {})
        placed = sorted((rowids[k], k, rows[k], namespace) for k in rows if k in rowids)
        keys: Iterable[str] = rows
        if placed:
            before = self._conn.total_changes
            self._conn.executemany(
                "UPDATE hw_rows SET value = ?3 WHERE rowid = ?1 AND key = ?2 AND ns = ?4", placed
            )
            if self._conn.total_changes - before == len(placed):
                if len(placed) == len(rows):
                    return
                keys = (k for k in rows if k not in rowids)
        # In key order: neighbouring keys share pages of the key index, each is visited
        # once. The keys alone are sorted: comparing (key, value) pairs costs twice as much.
        self._conn.executemany(
            "INSERT INTO hw_rows VALUES (?, ?, ?) ON CONFLICT (ns, key) "
            "DO UPDATE SET value = excluded.value",
            [(namespace, k, rows[k]) for k in sorted(keys)],
        )

    def _check_fence(self, group: str, fence: Mapping[int, int]) -> None:
        # Inside the write transaction: no claim can slip in between check and write.
        current = dict(
            self._conn.execute(
                "SELECT partition, generation FROM hw_fences WHERE grp = ?", (group,)
            ).fetchall()
        )
        stale = sorted(p for p, g in fence.items() if current.get(p, 0) != g)
        if stale:
            raise FencedError(
                f"group {group!r}: partitions {stale} were claimed by another member "
                f"(generations {[current.get(p, 0) for p in stale]}, this writer holds "
                f"{[fence[p] for p in stale]})",
                stale,
            )

    def claim(self, group: str, partitions: Sequence[int]) -> dict[int, int]:
        if not partitions:
            return {}
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                claimed = {
                    p: int(
                        self._conn.execute(
                            "INSERT INTO hw_fences VALUES (?, ?, 1) ON CONFLICT (grp, partition) "
                            "DO UPDATE SET generation = generation + 1 RETURNING generation",
                            (group, p),
                        ).fetchone()[0]
                    )
                    for p in partitions
                }
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise OnlineStoreError(f"online store claim failed: {exc}") from exc
        return claimed

    def positions(self, group: str) -> dict[int, Position]:
        with self._lock:
            rows = self._query(
                "SELECT partition, next_offset, as_of_ms FROM hw_positions WHERE grp = ?", (group,)
            )
        return {int(p): Position(int(o), int(t)) for p, o, t in rows}

    @contextmanager
    def _synced(self) -> Iterator[None]:
        # Commits inside fsync the WAL (with every earlier commit in it): a removal is
        # on disk before the erasure that asked for it is confirmed.
        with self._lock:
            self._conn.execute("PRAGMA synchronous=FULL")
            try:
                yield
            finally:
                self._conn.execute("PRAGMA synchronous=NORMAL")

    def delete(self, namespace: str, keys: Sequence[str]) -> int:
        statements = []
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            statements.append(
                (f"DELETE FROM hw_rows WHERE ns = ? AND key IN ({marks})", (namespace, *chunk))
            )
        with self._synced():
            return self._deleting(statements)

    def _deleting(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> int:
        """Run the deletes in one transaction that also counts them in ``hw_deletes``."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                removed = sum(
                    self._conn.execute(sql, params).rowcount for sql, params in statements
                )
                if removed:
                    self._conn.execute(
                        "INSERT INTO hw_deletes VALUES (1, 1, 0) "
                        "ON CONFLICT (one) DO UPDATE SET deleted = deleted + 1"
                    )
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise OnlineStoreError(f"online store delete failed: {exc}") from exc
        return removed

    def count(self, namespace: str, keys: Sequence[str]) -> int:
        return len(self.get(namespace, keys))

    def keys(self, namespace: str) -> list[str]:
        """In the order first written: a rebuild's hand-over, which writes a new
        namespace from a staged one, keeps the staged order."""
        with self._lock:
            return [
                k
                for (k,) in self._query(
                    "SELECT key FROM hw_rows WHERE ns = ? ORDER BY rowid", (namespace,)
                )
            ]

    def clear(self, namespace: str) -> int:
        with self._synced():
            return self._deleting([("DELETE FROM hw_rows WHERE ns = ?", (namespace,))])

    def scrub(self, erased: Collection[str] = (), *, rebuild: bool = False) -> dict[str, object]:
        """A delete that no rebuild of the file has followed yet, by this process or
        another, rebuilds it: a row's earlier copy left in a page's free space may have
        lost its key and kept its values (the user's items, an order id), which no
        search for ids finds (``tests/erasure/test_sqlite_pages.py``). The deletes are
        counted in the file, so a rebuild owed when a process stopped is made by the
        next scrub."""
        with self._lock:
            (deleted, rebuilt) = self._query(
                "SELECT COALESCE(MAX(deleted), 0), COALESCE(MAX(rebuilt), 0) FROM hw_deletes"
            )[0]
            done = scrub_for_erasure(
                self._conn,
                self._lock,
                OnlineStoreError,
                "online store",
                erased=erased,
                rebuild=rebuild,
                deleted=deleted > rebuilt,
            )
            if done.get("vacuumed"):
                # Every delete counted before the rebuild began is gone from the file;
                # one counted since is owed its own.
                self._query(
                    "UPDATE hw_deletes SET rebuilt = ? WHERE rebuilt < ?", (deleted, deleted)
                )
            return done

    def close(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
            self._conn.close()

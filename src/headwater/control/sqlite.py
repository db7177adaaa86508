"""The embedded control plane: one SQLite file, WAL mode, safe across threads and processes."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from headwater._sqlite import connect, scrub_for_erasure
from headwater._url import sqlite_path
from headwater.control.base import Row
from headwater.errors import ControlPlaneError

__all__ = ["SqliteControlDatabase"]


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            return self._conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise ControlPlaneError(f"control plane (sqlite): {exc}") from exc

    def lock_table(self, table: str) -> None:
        # Every transaction here already holds the database's write lock (BEGIN
        # IMMEDIATE): other writers wait until it ends.
        del table


class SqliteControlDatabase:
    """Control-plane tables in a SQLite file (the embedded default)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._path = sqlite_path(url)
        self._lock = threading.RLock()
        try:
            self._conn = connect(self._path, synchronous="FULL", busy_ms=30_000)
        except sqlite3.Error as exc:
            raise ControlPlaneError(f"cannot open control plane {url}: {exc}") from exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self.transaction() as tx:
            return tx.execute(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        with self._lock:
            try:
                # IMMEDIATE takes the write lock up front, so two processes cannot
                # both read a version number and then both insert it.
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise ControlPlaneError(f"control plane (sqlite): {exc}") from exc
            try:
                yield _Tx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise ControlPlaneError(f"control plane (sqlite): commit failed: {exc}") from exc

    def ensure_schema(self, statements: Sequence[str]) -> None:
        with self.transaction() as tx:
            for statement in statements:
                tx.execute(statement)

    def ensure_columns(self, table: str, columns: Mapping[str, str]) -> None:
        with self.transaction() as tx:
            have = {str(row[1]) for row in tx.execute(f"PRAGMA table_info({table})")}
            for name, ddl in columns.items():
                if name not in have:
                    tx.execute(f"ALTER TABLE {table} ADD COLUMN {name} {ddl}")

    def scrub(self, tables: Sequence[str], *, rewrite: bool = False) -> dict[str, object]:
        """Deleted rows are zeroed in place (``secure_delete``, which leaves no freed
        bytes: ``rewrite`` needs nothing more); this empties the write-ahead log that
        still holds their old page images."""
        del rewrite
        done = scrub_for_erasure(
            self._conn, self._lock, ControlPlaneError, "control plane (sqlite)"
        )
        return {"tables": list(tables), **done}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

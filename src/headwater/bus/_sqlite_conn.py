"""One connection to the SQLite bus file, with the pragmas the log needs and its locks."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from headwater._sqlite import connect
from headwater.errors import BusError

__all__ = ["LogConnection"]

#: One mutex per bus file for the writers of this process (the embedded stack runs the
#: gateway and every consumer in one process, each with its own connection): they queue
#: on it instead of polling SQLite's file lock, whose busy handler sleeps up to 100 ms
#: between tries. Other processes still meet at the file lock.
_WRITERS: dict[str, threading.Lock] = {}
_WRITERS_GUARD = threading.Lock()


def _writer_lock(path: str) -> threading.Lock:
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(os.path.realpath(path), threading.Lock())


class LogConnection:
    """One connection with the pragmas the log needs, shared under a lock."""

    def __init__(self, path: str, *, cache_kb: int = 65_536, synchronous: str = "FULL") -> None:
        self.lock = threading.RLock()
        self._writer = _writer_lock(path)
        try:
            # FULL: a commit is fsynced before publish returns (durable acknowledgement).
            self.conn = connect(path, synchronous=synchronous)
            self.conn.execute(f"PRAGMA cache_size=-{cache_kb}")
        except sqlite3.Error as exc:
            raise BusError(f"cannot open the SQLite bus at {path}: {exc}") from exc

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        with self.lock, self._writer:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise BusError(f"SQLite bus: {exc}") from exc
            try:
                yield self.conn
            except sqlite3.Error as exc:
                self.conn.execute("ROLLBACK")
                raise BusError(f"SQLite bus: {exc}") from exc
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise BusError(f"SQLite bus: commit failed: {exc}") from exc

    def read(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with self.lock:
            try:
                return self.conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise BusError(f"SQLite bus: {exc}") from exc

    def close(self) -> None:
        with self.lock:
            self.conn.close()

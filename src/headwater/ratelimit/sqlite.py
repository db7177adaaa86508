"""The embedded shared rate limiter: one SQLite file for every gateway process of a host."""

from __future__ import annotations

import sqlite3
import threading
import time

from headwater._sqlite import connect
from headwater._url import redacted, sqlite_path
from headwater.errors import BackendError, BackendUnavailableError
from headwater.ratelimit.base import Bucket, refused, take_from

__all__ = ["SqliteRateLimiter"]

_BUSY_MS = 5_000
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hw_rate_buckets (key_id TEXT PRIMARY KEY, "
    "rate REAL NOT NULL, burst REAL NOT NULL, tokens REAL NOT NULL, stamp REAL NOT NULL) "
    "WITHOUT ROWID"
)
_READ = "SELECT rate, burst, tokens, stamp FROM hw_rate_buckets WHERE key_id = ?"
_WRITE = (
    "INSERT INTO hw_rate_buckets VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_id) DO UPDATE SET "
    "rate = excluded.rate, burst = excluded.burst, tokens = excluded.tokens, "
    "stamp = excluded.stamp"
)


class SqliteRateLimiter:
    """One row per key in ``sqlite:///path/ratelimit.db``, shared by every process that
    opens the same file on this host (not over a network file system: WAL needs shared
    memory).

    Each ``take`` is one ``BEGIN IMMEDIATE`` transaction: the write lock is taken before
    the row is read, so two processes never spend the same tokens. The file holds nothing
    worth keeping: delete it if a power cut leaves it damaged (``synchronous=OFF``).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        try:
            # Bucket state is not worth an fsync: a crash loses at most the last spends,
            # and buckets refill within seconds anyway.
            self._conn = connect(sqlite_path(url), synchronous="OFF", busy_ms=_BUSY_MS)
            self._conn.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: sqlite3.Error) -> BackendError:
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            # Another process held the write lock past the busy timeout: retry later.
            return BackendUnavailableError(f"rate limiter {redacted(self.url)} is busy: {exc}")
        return BackendError(f"rate limiter {redacted(self.url)}: {exc}")

    def take(self, key_id: str, events: int, rate: float, burst: float) -> None:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    row = self._conn.execute(_READ, (key_id,)).fetchone()
                    # Wall clock, read under the write lock: monotonic clocks of two
                    # processes have different origins, so they cannot share a stamp.
                    bucket, wait = take_from(
                        Bucket(*row) if row is not None else None,
                        events,
                        rate,
                        burst,
                        time.time(),
                    )
                    self._conn.execute(_WRITE, (key_id, *bucket.astuple()))
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
        if wait is not None:
            raise refused(rate, burst, wait)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

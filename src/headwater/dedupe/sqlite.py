"""The embedded idempotency window: a SQLite file with an expiry sweep."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence

from headwater._url import sqlite_path
from headwater.errors import BackendError

__all__ = ["SqliteIdempotencyWindow"]

_SWEEP_S = 30.0
_CHUNK = 500  # users per statement, below SQLite's bound on parameters


class SqliteIdempotencyWindow:
    """Accepted event ids in SQLite (``sqlite:///path/dedupe.db``)."""

    def __init__(self, url: str, *, window_s: float) -> None:
        self.url = url
        self.window_s = window_s
        self._lock = threading.Lock()
        self._last_sweep = 0.0
        try:
            self._conn = sqlite3.connect(
                sqlite_path(url), timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is enough: a window lost in a power cut only lets a retry through, and
            # every consumer is idempotent by event id anyway.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS hw_dedupe (event_id TEXT PRIMARY KEY, "
                "user_id TEXT NOT NULL, accepted_ms INTEGER NOT NULL) WITHOUT ROWID"
            )
            # No index on user_id: it would double the cost of every insert, and only an
            # erasure (rare, minutes of budget) needs to find a user's entries.
        except sqlite3.Error as exc:
            raise BackendError(f"idempotency window {url}: {exc}") from exc

    def _run(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        try:
            return self._conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise BackendError(f"idempotency window: {exc}") from exc

    def seen(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        cutoff = int((time.time() - self.window_s) * 1000)
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(event_ids), 900):
                chunk = event_ids[start : start + 900]
                marks = ",".join("?" * len(chunk))
                found.update(
                    str(r[0])
                    for r in self._run(
                        f"SELECT event_id FROM hw_dedupe WHERE event_id IN ({marks}) "
                        "AND accepted_ms >= ?",
                        (*chunk, cutoff),
                    )
                )
        return found

    def remember(self, entries: Sequence[tuple[str, str]]) -> None:
        now = int(time.time() * 1000)
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                self._conn.executemany(
                    "INSERT INTO hw_dedupe VALUES (?, ?, ?) ON CONFLICT (event_id) "
                    "DO UPDATE SET accepted_ms = excluded.accepted_ms",
                    [(e, u, now) for e, u in entries],
                )
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise BackendError(f"idempotency window: {exc}") from exc
            if time.monotonic() - self._last_sweep > _SWEEP_S:
                self._last_sweep = time.monotonic()
                self._run(
                    "DELETE FROM hw_dedupe WHERE accepted_ms < ?",
                    (now - int(self.window_s * 1000),),
                )

    def erase_user(self, user_id: str) -> int:
        return self.erase_users([user_id])[user_id]

    def count_user(self, user_id: str) -> int:
        return self.count_users([user_id])[user_id]

    def erase_users(self, user_ids: Sequence[str]) -> dict[str, int]:
        return self._per_user(
            "DELETE FROM hw_dedupe WHERE user_id IN ({}) RETURNING user_id, 1", user_ids
        )

    def count_users(self, user_ids: Sequence[str]) -> dict[str, int]:
        return self._per_user(
            "SELECT user_id, COUNT(*) FROM hw_dedupe WHERE user_id IN ({}) GROUP BY user_id",
            user_ids,
        )

    def _per_user(self, sql: str, user_ids: Sequence[str]) -> dict[str, int]:
        """Sum the ``(user_id, n)`` rows of ``sql`` per user, one statement (one scan of
        the table: user_id is not indexed, see above) per chunk of users."""
        found = dict.fromkeys(user_ids, 0)
        unique = list(found)
        with self._lock:
            for first in range(0, len(unique), _CHUNK):
                chunk = unique[first : first + _CHUNK]
                for user, n in self._run(sql.format(",".join("?" * len(chunk))), chunk):
                    found[str(user)] += int(str(n))
        return found

    def close(self) -> None:
        with self._lock:
            self._conn.close()

"""The optional on-disk spool: queued events survive a crash of the producer process.

An event is written when it is tracked and deleted once the gateway accepted it (or
counted it a duplicate) or refused it for good; a client opened on the same file sends
what is left. Each event keeps its ``event_id``, and the gateway de-duplicates by it,
so an event sent just before a crash and sent again after is published once.

WAL with ``synchronous=NORMAL``: a committed write survives the process being killed
(not a power cut). One client per spool file at a time. A removed event is zeroed in its
page (``secure_delete``), and each time the spool empties its write-ahead log is
truncated, so a sent event's bytes do not linger on the producer's disk.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from headwater.errors import BackendError, ConfigurationError

__all__ = ["Spool"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spooled (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    event BLOB NOT NULL
)
"""


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise BackendError(f"the spool {path} failed: {exc}") from exc


class Spool:
    """Queued events on disk, in the order they were tracked."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(f"cannot open the spool {self.path}: {exc}") from exc

    def load(self) -> list[dict[str, Any]]:
        """Every spooled event, oldest first (what a crashed client left)."""
        with self._lock, _translated(self.path):
            rows = self._db.execute("SELECT event FROM spooled ORDER BY seq").fetchall()
        return [msgspec.json.decode(row[0]) for row in rows]

    def add(self, events: Sequence[dict[str, Any]]) -> None:
        """Write events before they are queued (one transaction)."""
        rows = [(str(e["event_id"]), msgspec.json.encode(e)) for e in events]
        with self._lock, _translated(self.path):
            self._db.execute("BEGIN")
            # An id already spooled is the same event tracked again: the gateway keeps one.
            self._db.executemany(
                "INSERT OR IGNORE INTO spooled (event_id, event) VALUES (?, ?)", rows
            )
            self._db.execute("COMMIT")

    def remove(self, event_ids: Iterable[str]) -> None:
        """Forget events the gateway accepted or refused for good."""
        ids = [(i,) for i in event_ids]
        if not ids:
            return
        with self._lock, _translated(self.path):
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM spooled WHERE event_id = ?", ids)
            self._db.execute("COMMIT")
            if self._db.execute("SELECT NOT EXISTS (SELECT 1 FROM spooled)").fetchone()[0]:
                # Nothing waits: the log's old page images go too (a reader never blocks it).
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def count(self) -> int:
        """How many events are spooled."""
        with self._lock, _translated(self.path):
            return int(self._db.execute("SELECT count(*) FROM spooled").fetchone()[0])

    def close(self) -> None:
        """Close the file (what is in it stays for the next client)."""
        with self._lock:
            self._db.close()

"""What the batch has computed: each day partition with the archive files it came from.

A day is current while the archive's files for that day are the ones recorded here
(their fingerprint); an append of late events, an erasure's DELETE or a compaction
changes the files, so the next run recomputes that day and only that day.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from headwater._time import now_text
from headwater.errors import ArchiveError

__all__ = ["BatchState", "ComputedDay", "RunRecord"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS days (
        day TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, archive_version INTEGER NOT NULL,
        events INTEGER NOT NULL, computed_at TEXT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, started_at TEXT NOT NULL,
        finished_at TEXT, status TEXT NOT NULL, days TEXT NOT NULL DEFAULT '[]',
        as_of TEXT, archive_version INTEGER, detail TEXT NOT NULL DEFAULT '{}')""",
)


class ComputedDay(msgspec.Struct, frozen=True):
    """A day partition as last computed."""

    day: str
    fingerprint: str
    archive_version: int
    events: int
    computed_at: str


class RunRecord(msgspec.Struct, frozen=True):
    """One batch run (nightly, backfill or erasure recompute)."""

    id: int
    kind: str
    started_at: str
    finished_at: str | None
    status: str
    days: list[str]
    as_of: str | None
    archive_version: int | None
    detail: dict[str, Any]


def _now() -> str:
    return now_text()


class BatchState:
    """Computed days, the window end of the current outputs, and the run history."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                path, timeout=60.0, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                self._conn.execute(statement)
        except sqlite3.Error as exc:
            raise ArchiveError(f"batch state {path}: {exc}") from exc

    def _run(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise ArchiveError(f"batch state: {exc}") from exc

    def days(self) -> dict[str, ComputedDay]:
        """Every computed day."""
        rows = self._run(
            "SELECT day, fingerprint, archive_version, events, computed_at FROM days ORDER BY day"
        )
        return {r[0]: ComputedDay(*r) for r in rows}

    def forget(self, days: Sequence[str]) -> None:
        """Mark days as not computed (before their derived files are replaced)."""
        with self._lock:
            self._conn.executemany("DELETE FROM days WHERE day = ?", [(d,) for d in days])

    def record(self, days: Sequence[ComputedDay]) -> None:
        """Mark days as computed from the given archive files."""
        with self._lock:
            self._conn.executemany(
                "INSERT INTO days VALUES (?, ?, ?, ?, ?) ON CONFLICT (day) DO UPDATE SET "
                "fingerprint = excluded.fingerprint, archive_version = excluded.archive_version,"
                " events = excluded.events, computed_at = excluded.computed_at",
                [(d.day, d.fingerprint, d.archive_version, d.events, d.computed_at) for d in days],
            )

    def get_meta(self, key: str) -> str | None:
        """A stored setting such as the window end of the current outputs."""
        rows = self._run("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting."""
        self._run(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def start_run(self, kind: str) -> int:
        """Record a run's start; its id."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO runs (kind, started_at, status) VALUES (?, ?, 'running')",
                (kind, _now()),
            )
            return int(cur.lastrowid or 0)

    def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        days: Sequence[str],
        as_of: str | None,
        archive_version: int | None,
        detail: dict[str, Any],
    ) -> None:
        """Record how a run ended."""
        self._run(
            "UPDATE runs SET finished_at = ?, status = ?, days = ?, as_of = ?, "
            "archive_version = ?, detail = ? WHERE id = ?",
            (
                _now(),
                status,
                json.dumps(list(days)),
                as_of,
                archive_version,
                json.dumps(detail),
                run_id,
            ),
        )

    def runs(self, limit: int = 10) -> list[RunRecord]:
        """The latest runs, newest first."""
        rows = self._run(
            "SELECT id, kind, started_at, finished_at, status, days, as_of, "
            "archive_version, detail FROM runs ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            RunRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], json.loads(r[8]))
            for r in rows
        ]

    def close(self) -> None:
        """Close the state file."""
        with self._lock:
            self._conn.close()

"""What the batch has computed: each day partition with the archive files it came from.

The state lives in the control plane (SQLite embedded, PostgreSQL scale-out), so every
host that shares the control plane sees the same computed days, runs and window end:
a host deployed on a fresh working directory knows what the others computed.

A day is current while the archive's files for that day are the ones recorded here
(their fingerprint); an append of late events, an erasure's DELETE or a compaction
changes the files, so the next run recomputes that day and only that day.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from headwater._time import now_text, parse_time
from headwater.control.base import ControlDatabase

__all__ = ["SCHEMA", "BatchState", "ComputedDay", "RunRecord"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hw_batch_days (
        day TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, archive_version BIGINT NOT NULL,
        events BIGINT NOT NULL, computed_at TEXT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS hw_batch_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS hw_batch_runs (
        id BIGINT PRIMARY KEY, kind TEXT NOT NULL, started_at TEXT NOT NULL,
        finished_at TEXT, status TEXT NOT NULL, days TEXT NOT NULL,
        as_of TEXT, archive_version BIGINT, detail TEXT NOT NULL, host TEXT NOT NULL)""",
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
    host: str = ""


class BatchState:
    """Computed days, the window end of the current outputs, and the run history."""

    def __init__(self, db: ControlDatabase) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)

    def days(self) -> dict[str, ComputedDay]:
        """Every computed day."""
        rows = self.db.execute(
            "SELECT day, fingerprint, archive_version, events, computed_at FROM hw_batch_days "
            "ORDER BY day"
        )
        return {
            str(r[0]): ComputedDay(str(r[0]), str(r[1]), int(r[2]), int(r[3]), str(r[4]))
            for r in rows
        }

    def forget(self, days: Sequence[str]) -> None:
        """Mark days as not computed (before their derived files are replaced)."""
        if not days:
            return
        with self.db.transaction() as tx:
            for day in days:
                tx.execute("DELETE FROM hw_batch_days WHERE day = ?", (day,))

    def record(self, days: Sequence[ComputedDay]) -> None:
        """Mark days as computed from the given archive files."""
        with self.db.transaction() as tx:
            for d in days:
                tx.execute(
                    "INSERT INTO hw_batch_days VALUES (?, ?, ?, ?, ?) ON CONFLICT (day) DO UPDATE "
                    "SET fingerprint = excluded.fingerprint, "
                    "archive_version = excluded.archive_version, events = excluded.events, "
                    "computed_at = excluded.computed_at",
                    (d.day, d.fingerprint, d.archive_version, d.events, d.computed_at),
                )

    def get_meta(self, key: str) -> str | None:
        """A stored setting such as the window end of the current outputs."""
        rows = self.db.execute("SELECT value FROM hw_batch_meta WHERE name = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting."""
        self.db.execute(
            "INSERT INTO hw_batch_meta VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def start_run(self, kind: str, host: str = "") -> int:
        """Record a run's start; its id (runs start under the batch lock, one at a time,
        so a run still marked running was cut short: it is marked abandoned)."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE hw_batch_runs SET status = 'abandoned', finished_at = ? "
                "WHERE status = 'running'",
                (now_text(),),
            )
            rows = tx.execute("SELECT max(id) FROM hw_batch_runs")
            run_id = int(rows[0][0] or 0) + 1 if rows else 1
            tx.execute(
                "INSERT INTO hw_batch_runs VALUES (?, ?, ?, NULL, 'running', '[]', NULL, NULL, "
                "'{}', ?)",
                (run_id, kind, now_text(), host),
            )
        return run_id

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
        self.db.execute(
            "UPDATE hw_batch_runs SET finished_at = ?, status = ?, days = ?, as_of = ?, "
            "archive_version = ?, detail = ? WHERE id = ?",
            (
                now_text(),
                status,
                json.dumps(list(days)),
                as_of,
                archive_version,
                json.dumps(detail),
                run_id,
            ),
        )

    def last_succeeded(self) -> dict[str, datetime]:
        """Per run kind (``nightly``, ``backfill``), when its latest successful run finished."""
        rows = self.db.execute(
            "SELECT kind, MAX(finished_at) FROM hw_batch_runs "
            "WHERE status = 'ok' AND finished_at IS NOT NULL GROUP BY kind"
        )
        return {str(kind): parse_time(str(at)) for kind, at in rows}

    def runs(self, limit: int = 10) -> list[RunRecord]:
        """The latest runs, newest first."""
        rows = self.db.execute(
            "SELECT id, kind, started_at, finished_at, status, days, as_of, "
            "archive_version, detail, host FROM hw_batch_runs ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            RunRecord(
                int(r[0]),
                str(r[1]),
                str(r[2]),
                None if r[3] is None else str(r[3]),
                str(r[4]),
                json.loads(r[5]),
                None if r[6] is None else str(r[6]),
                None if r[7] is None else int(r[7]),
                json.loads(r[8]),
                str(r[9]),
            )
            for r in rows
        ]

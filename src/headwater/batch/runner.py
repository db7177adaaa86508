"""The nightly batch: SQL over the archive (DuckDB or Spark), incremental by day partition.

A run (1) lists the archive's day partitions with their files, (2) recomputes the
day aggregates of the days whose files changed since they were computed (new days,
late events, erasures, compactions), in chunks, (3) drops days past the lookback
window, and (4) recomputes the outputs of the window from the day aggregates. A
backfill names a date range and recomputes exactly those days.

Runs are serialised by the batch lock in the control plane (with a lease, renewed
while a run works), so a scheduled run, a ``headwater batch run`` on any host and an
erasure recompute never interleave; a second run is refused with the holder's name.
State (computed days, runs) is in the control plane and the day aggregates beside the
archive, so nothing of the batch lives in a working directory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec

from headwater._time import now_text
from headwater.archive.schema import ARCHIVE_SCHEMA
from headwater.archive.table import ArchiveTable, DayFiles
from headwater.batch.derived import OUTPUTS_DIR, DerivedStore
from headwater.batch.engines import BatchEngine, open_engine
from headwater.batch.lock import BatchLock
from headwater.batch.migration import retire_legacy_dir
from headwater.batch.outputs import item_namespaces, refresh_outputs, window_start
from headwater.batch.settings import BatchSettings
from headwater.batch.sql import (
    DAY_TABLES,
    events_sql,
    item_pair_day_sql,
    item_pop_day_sql,
    user_item_day_sql,
)
from headwater.batch.state import BatchState, ComputedDay
from headwater.control.base import ControlDatabase
from headwater.metrics import BATCH_RUN_SECONDS
from headwater.online.base import OnlineStore

__all__ = [
    "AS_OF_KEY",
    "DAY_TABLES_KEY",
    "DAY_TABLES_VERSION",
    "BatchRunner",
    "ChunkResult",
    "Progress",
    "RunReport",
]

log = logging.getLogger("headwater.batch")

Progress = Callable[[str], None]
AS_OF_KEY = "as_of_day"  # meta key: the last day of the current outputs' window
#: Meta key: the layout of the day aggregates on storage. Days computed under another
#: layout (before the per-type counts) are computed again by the next run.
DAY_TABLES_KEY = "day_tables"
DAY_TABLES_VERSION = "2"
#: Meta key: the namespaces of the item features the last run wrote (JSON list).
ITEM_NAMESPACES_KEY = "item_namespaces"

_READ_COLUMNS = [
    c
    for c in ARCHIVE_SCHEMA.names
    if c
    in (
        "event_id",
        "event_type",
        "user_id",
        "item_id",
        "surface",
        "timestamp",
        "category",
        "brand",
        "price",
        "quantity",
        "date",
    )
]


class RunReport(msgspec.Struct, kw_only=True):
    """What one run did."""

    run_id: int
    kind: str
    archive_version: int
    as_of: str | None
    days_computed: list[str]
    days_current: int
    days_dropped: list[str]
    events: int
    outputs: dict[str, Any]
    seconds: float
    files_removed: int = 0


def _today() -> date:
    return datetime.now(UTC).date()


class ChunkResult(msgspec.Struct, kw_only=True):
    """Day aggregates recomputed: events read, files written and removed for good."""

    events: int = 0
    written: list[str] = []
    removed: list[str] = []


class BatchRunner:
    """Computes the batch features of one archive into one online store."""

    def __init__(
        self,
        archive: ArchiveTable,
        store: OnlineStore,
        cfg: BatchSettings,
        control: ControlDatabase,
        *,
        derived: DerivedStore | None = None,
        engine: BatchEngine | None = None,
    ) -> None:
        self.archive = archive
        self.store = store
        self.cfg = cfg
        self.state = BatchState(control)
        self.lock = BatchLock(control, lease_s=cfg.lock_lease_s)
        self.derived = derived or DerivedStore(
            f"{archive.root}/{OUTPUTS_DIR}", storage_options=archive.storage_options
        )
        # An engine given is the caller's to close (a shared Spark session); one made here
        # (from ``cfg.engine``) is closed with the runner.
        self.engine = engine or open_engine(cfg)
        self._owns_engine = engine is None
        self._rlock = threading.RLock()
        self._depth = 0

    # -- locking ---------------------------------------------------------------

    @contextmanager
    def locked(
        self,
        purpose: str = "batch run",
        *,
        wait_s: float = 0.0,
        stop: threading.Event | None = None,
    ) -> Iterator[None]:
        """Hold the batch lock: re-entrant in a thread, one holder across every process
        and host sharing the control plane; ``BatchRunningError`` names the holder when
        it is still held after ``wait_s`` (or when ``stop`` is set while waiting)."""
        with self._rlock:
            if self._depth == 0:
                with self.lock.held(purpose, wait_s=wait_s, stop=stop):
                    self._depth += 1
                    try:
                        self.retire_legacy()
                        yield
                    finally:
                        self._depth -= 1
                return
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1

    def retire_legacy(self) -> list[str]:
        """Remove what an earlier version kept in its local batch directory (its day
        aggregates hold user ids that erasure no longer reaches there)."""
        return retire_legacy_dir(self.cfg.legacy_dir, self.derived.url)

    def connect(self) -> AbstractContextManager[Any]:
        """A connection of the batch's engine (DuckDB's API: ``engines/base.py``)."""
        return self.engine.connect()

    # -- runs ------------------------------------------------------------------

    def run(
        self,
        *,
        start: date | None = None,
        end: date | None = None,
        until: date | None = None,
        progress: Progress | None = None,
        wait_s: float = 0.0,
        stop: threading.Event | None = None,
    ) -> RunReport:
        """A nightly run (``start``/``end`` unset) or a backfill of ``[start, end]``.

        The nightly run computes every changed day up to ``until`` (default: yesterday,
        UTC) within the lookback window, and moves the outputs' window end to ``until``.
        A backfill recomputes the named days only and keeps the window end. When another
        process holds the batch lock for longer than ``wait_s`` (or ``stop`` is set while
        waiting for it): ``BatchRunningError``.
        """
        backfill = start is not None or end is not None
        kind = "backfill" if backfill else "nightly"
        say = progress or (lambda _line: None)
        began = time.perf_counter()
        with self.locked(f"{kind} run", wait_s=wait_s, stop=stop), self.connect() as con:
            run_id = self.state.start_run(kind, self.lock.host)
            try:
                report = self._run(
                    con, run_id, start=start, end=end, until=until, backfill=backfill, say=say
                )
            except Exception as exc:
                self.state.finish_run(
                    run_id,
                    status="failed",
                    days=[],
                    as_of=None,
                    archive_version=None,
                    detail={"error": str(exc)},
                )
                raise
        report.seconds = round(time.perf_counter() - began, 3)
        BATCH_RUN_SECONDS.observe(report.seconds)
        say(
            f"done in {report.seconds:.1f}s: {len(report.days_computed)} day(s) computed, "
            f"outputs as of {report.as_of}"
        )
        return report

    def _run(
        self,
        con: Any,
        run_id: int,
        *,
        start: date | None,
        end: date | None,
        until: date | None,
        backfill: bool,
        say: Progress,
    ) -> RunReport:
        version = self.archive.version()
        files = self.archive.days()
        computed = self.state.days()
        relayout = self.state.get_meta(DAY_TABLES_KEY) != DAY_TABLES_VERSION
        if relayout:
            computed = {}  # every day of the window is computed again, in the new layout
        last = (until or _today() - timedelta(days=1)).isoformat()
        first = window_start(last, self.cfg.lookback_days)
        dropped: list[str] = []
        if backfill:
            lo = (start or date.fromisoformat(min(files, default=last))).isoformat()
            hi = (end or date.fromisoformat(last)).isoformat()
            known = set(files) | set(computed)
            todo = sorted(d for d in known if lo <= d <= hi or (relayout and first <= d <= last))
            as_of_day = self.state.get_meta(AS_OF_KEY) or hi
            current = 0
        else:
            in_window = {d for d in files if first <= d <= last}
            todo = sorted(
                d
                for d in in_window
                if d not in computed or computed[d].fingerprint != files[d].fingerprint
            )
            # Days computed earlier whose archive files are all gone (every row deleted).
            todo += sorted(d for d in computed if first <= d <= last and d not in files)
            current = len(in_window) - len([d for d in todo if d in in_window])
            on_storage = {d for t in DAY_TABLES for d in self.derived.days(t)}
            dropped = sorted(
                {d for d in computed if d < first} | {d for d in on_storage if d < first}
            )
            as_of_day = last
        say(
            f"archive version {version}: {len(todo)} day(s) to compute, {current} current, "
            f"{len(dropped)} past the {self.cfg.lookback_days}-day window"
        )
        result = self.compute_days(con, todo, files, version, say)
        if relayout:
            self.state.set_meta(DAY_TABLES_KEY, DAY_TABLES_VERSION)
        removed = list(result.removed)
        if dropped:
            self.lock.check()
            self.state.forget(dropped)
            removed += self.derived.drop(dropped)
        say(f"outputs for the window ending {as_of_day}:")
        outputs = refresh_outputs(
            con, self.derived, self.store, self.cfg, as_of_day=as_of_day, progress=say
        )
        self.state.set_meta(AS_OF_KEY, as_of_day)
        retired = self.retire_namespaces()
        if retired:
            say(f"  emptied the namespaces of features no longer declared: {retired}")
        self.state.finish_run(
            run_id,
            status="ok",
            days=todo,
            as_of=outputs["as_of"],
            archive_version=version,
            detail={
                "events": result.events,
                "dropped": dropped,
                "files_written": len(result.written),
                "files_removed": len(removed),
            },
        )
        return RunReport(
            run_id=run_id,
            kind="backfill" if backfill else "nightly",
            archive_version=version,
            as_of=outputs["as_of"],
            days_computed=todo,
            days_current=current,
            days_dropped=dropped,
            events=result.events,
            outputs=outputs,
            seconds=0.0,
            files_removed=len(removed),
        )

    def retire_namespaces(self) -> list[str]:
        """Empty the namespaces of item features no longer declared (their rows would
        otherwise stay, and an erasure would no longer recompute them); the ones emptied."""
        current = item_namespaces(self.cfg)
        recorded = msgspec.json.decode(self.state.get_meta(ITEM_NAMESPACES_KEY) or "[]")
        gone = [ns for ns in recorded if ns not in current]
        for ns in gone:
            self.store.clear(ns)
        if gone or recorded != current:
            self.state.set_meta(ITEM_NAMESPACES_KEY, msgspec.json.encode(current).decode())
        return gone

    # -- day aggregates ----------------------------------------------------------

    def compute_days(
        self, con: Any, days: Sequence[str], files: dict[str, DayFiles], version: int, say: Progress
    ) -> ChunkResult:
        """Recompute the day aggregates of ``days`` from the archive, chunk by chunk."""
        total = ChunkResult()
        step = max(1, self.cfg.days_per_chunk)
        for i in range(0, len(days), step):
            chunk = list(days[i : i + step])
            began = time.perf_counter()
            part = self._compute_chunk(con, chunk, files, version)
            n = part.events
            total.events += n
            total.written += part.written
            total.removed += part.removed
            say(
                f"  days {chunk[0]}..{chunk[-1]} ({i + len(chunk)}/{len(days)}): "
                f"{n:,} events in {time.perf_counter() - began:.1f}s"
            )
        return total

    def source(self, con: Any, days: Sequence[str], files: dict[str, DayFiles]) -> str:
        """A DuckDB relation over the archive rows of ``days``."""
        return self.archive.relation(con, files, _READ_COLUMNS, days)

    def _compute_chunk(
        self, con: Any, days: list[str], files: dict[str, DayFiles], version: int
    ) -> ChunkResult:
        events = events_sql(self.source(con, days, files), dedupe=self.cfg.dedupe_event_ids)
        con.execute(f"CREATE OR REPLACE TEMP TABLE ev AS {events}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE uid AS {user_item_day_sql('ev')}")
        outputs = {
            "user_item_day": "SELECT * FROM uid",
            "item_pair_day": item_pair_day_sql("uid", self.cfg),
            "item_pop_day": item_pop_day_sql("ev"),
        }
        count = con.execute("SELECT count(*) FROM ev").fetchall()
        n = int(count[0][0]) if count else 0
        # Fence, then forget first: a crash before the days are recorded again leaves
        # them to recompute (and their files to replace, whatever a crash left there).
        self.lock.check()
        self.state.forget(days)
        written, removed = self.derived.replace(con, outputs, days)
        con.execute("DROP TABLE ev")
        con.execute("DROP TABLE uid")
        stamp = now_text()
        self.state.record(
            [
                ComputedDay(
                    d,
                    files[d].fingerprint if d in files else "empty",
                    version,
                    files[d].rows if d in files else 0,
                    stamp,
                )
                for d in days
            ]
        )
        return ChunkResult(events=n, written=written, removed=removed)

    # -- status ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Computed days, days waiting, the outputs' window end and the last runs."""
        files = self.archive.days()
        computed = self.state.days()
        holder = self.lock.holder()
        stale = sorted(
            d for d in files if d in computed and computed[d].fingerprint != files[d].fingerprint
        )
        return {
            "as_of_day": self.state.get_meta(AS_OF_KEY),
            "archive_version": self.archive.version(),
            "archive_days": len(files),
            "computed_days": len(computed),
            "first_day": min(computed, default=None),
            "last_day": max(computed, default=None),
            "changed_since_computed": stale,
            "not_computed": sorted(d for d in files if d not in computed),
            "runs": [msgspec.to_builtins(r) for r in self.state.runs(5)],
            "outputs": self.derived.url,
            "lock": None if holder is None else msgspec.to_builtins(holder),
        }

    def close(self) -> None:
        """Stop the engine it opened (a Spark session); the control plane and the archive
        belong to whoever opened them (the composition root)."""
        if self._owns_engine:
            self.engine.close()

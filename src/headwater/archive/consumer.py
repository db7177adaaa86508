"""The archive consumer: every accepted signal into the Delta table, and erasure from it.

Idempotent by bus position: each commit carries, in the same atomic Delta commit, a
transaction identifier per bus partition (``<group>-p<partition>``) with the next
offset it covers. A replay after a crash between the Delta commit and the bus commit
skips exactly the records the table already holds, so nothing is archived twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from headwater._time import format_time
from headwater.archive.erasing import ErasedFiles
from headwater.archive.ledger import ErasureLedger, ErasureRecord
from headwater.archive.maintenance import VacuumReport
from headwater.archive.schema import COMPILED, records_to_arrow
from headwater.archive.table import ArchiveTable
from headwater.bus.base import KIND_SIGNAL, Record, RecordBatch, kinds_of
from headwater.erasure.events import Confirmation, ErasureEvent
from headwater.erasure.ledger import Participant
from headwater.erasure.participant import DEFAULT_CONFIRM_WITHIN_S
from headwater.errors import ArchiveError, BackendError, FencedError
from headwater.runtime.consumer import Consumer

__all__ = ["ArchiveConsumer", "position_id"]

log = logging.getLogger("headwater.archive")

_COMPACT_FILES = 8  # a day with more data files than this is compacted at maintenance
#: Commits into one day after which its small files are merged at once, not at the next
#: maintenance: an erasure's DELETE and every reader open each file of a day, and under
#: load (a commit per erasure, a few per second) an hour of commits is thousands of them.
_SMALL_FILES = 32
#: Files below this size are merged into files of about this size; larger ones stay, and
#: two files above half of it are never merged with each other. A full flush (50,000
#: signals as producers send them, about 1.5 MB) is left as written: maintenance merges
#: it with the rest of its day later. At 4 MB the merge rewrote full flushes in pairs,
#: a third of the consumer's CPU at 50,000 rows a commit (BENCHMARKS.md, "The archive's
#: merges"); the files it is for are the commits of a slow stream or of an erasure's
#: early flush, a few KB each.
_SMALL_FILE_BYTES = 1024 * 1024


def position_id(group: str, partition: int) -> str:
    """The Delta transaction id under which ``group`` records its position on a bus
    partition: the table holds exactly the partition's records below that offset."""
    return f"headwater-{group}-p{partition}"


class ArchiveConsumer(Consumer):
    """Writes signals to the archive table; erases users from it with proof."""

    name = "archive"
    confirm_within_s = DEFAULT_CONFIRM_WITHIN_S

    def __init__(
        self,
        table: ArchiveTable,
        ledger: ErasureLedger,
        subject: Callable[[str], str],
        *,
        group: str = "archive",
        retention_hours: float = 168.0,
        vacuum_interval_s: float | None = 3600.0,
    ) -> None:
        self.table = table
        self.ledger = ledger
        self.subject = subject
        self.group = group
        self.retention_hours = retention_hours
        self.vacuum_interval_s = vacuum_interval_s
        self.written = 0
        self.skipped_replays = 0
        self.commits = 0
        self.last_vacuum: VacuumReport | None = None
        self._last_maintenance = time.monotonic()
        self._touched_days: set[str] = set()
        self._commits_per_day: dict[str, int] = {}
        if not COMPILED:
            log.warning(
                "the archive's compiled record reader is not built; msgspec and Python "
                "convert each batch (about a fifth as fast)"
            )

    def app_id(self, partition: int) -> str:
        """The Delta transaction id under which a bus partition's position is recorded."""
        return position_id(self.group, partition)

    # -- signals ---------------------------------------------------------------

    def handle(self, records: Sequence[Record]) -> None:
        """Append the records not yet in the table, in one Delta commit with their positions."""
        if type(records) is RecordBatch and kinds_of(records) == {KIND_SIGNAL}:
            # Read in place from the bus (the SQLite bus's polls): no record is made.
            partitions = sorted(records.partitions())
        else:
            records = [r for r in records if r.kind == KIND_SIGNAL]
            partitions = sorted({r.partition for r in records})
        # Versions read and commit made on one snapshot: a writer that recorded any of
        # these partitions in between (a new owner) makes this commit fail (fenced).
        snapshot = self.table.table()
        recorded = self.table.transaction_versions([self.app_id(p) for p in partitions], snapshot)
        applied = {p: recorded[self.app_id(p)] or 0 for p in partitions}
        if type(records) is RecordBatch and all(
            first >= applied[p] for p, first in records.first_offsets().items()
        ):
            values = records.values()
            moved = {self.app_id(p): offset for p, offset in records.positions().items()}
        else:
            fresh: list[Record] = []
            for r in records:
                if r.offset < applied[r.partition]:
                    self.skipped_replays += 1
                else:
                    fresh.append(r)
            values = [r.value for r in fresh]
            moved = {self.app_id(r.partition): r.offset + 1 for r in fresh}
        if not values:
            return
        # A resend within the batch counts once.
        data = records_to_arrow(values, self.subject)
        self.table.append(
            data,
            transactions=moved,
            metadata={"headwater.consumer": self.group},
            snapshot=snapshot,
        )
        self.written += data.num_rows
        self.commits += 1
        days = data.column("date").unique().to_pylist()
        self._touched_days.update(days)
        self._merge_small_files(days)
        self._maybe_maintain()

    def _merge_small_files(self, days: list[str]) -> None:
        counts = self._commits_per_day
        for day in days:
            counts[day] = counts.get(day, 0) + 1
        full = [d for d in days if counts[d] >= _SMALL_FILES]
        if not full:
            return
        for day in full:
            del counts[day]
        try:
            merged = self.table.compact(full, target_size=_SMALL_FILE_BYTES)
        except (BackendError, FencedError) as exc:
            # A concurrent DELETE or compaction of the same files won (the signals are
            # committed already): the next round merges them.
            log.info("archive: merging the small files of %s deferred: %s", ", ".join(full), exc)
            return
        log.debug("archive: %d small file(s) of %s merged", merged, ", ".join(full))

    def on_idle(self, partitions: set[int]) -> None:
        """Caught up: a good moment for periodic compaction and vacuum."""
        del partitions
        self._maybe_maintain()

    def _maybe_maintain(self) -> None:
        interval = self.vacuum_interval_s
        if interval is None or time.monotonic() - self._last_maintenance < interval:
            return
        self._last_maintenance = time.monotonic()
        self.maintain()

    def maintain(self) -> VacuumReport:
        """Compact the days written since the last run, then vacuum with the retention."""
        days = self.table.days()
        crowded = [
            d
            for d in sorted(self._touched_days)
            if d in days and len(days[d].files) > _COMPACT_FILES
        ]
        self.table.compact(crowded)
        self._touched_days.clear()
        return self.vacuum()

    def vacuum(self, retention_hours: float | None = None) -> VacuumReport:
        """Remove for good the files deleted more than the retention ago; recorded in the ledger."""
        hours = self.retention_hours if retention_hours is None else retention_hours
        report = self.table.vacuum(hours)
        self.ledger.record_vacuum(report.vacuumed_at, hours, len(report.removed_files))
        self.last_vacuum = report
        log.info(
            "archive vacuum: %d file(s) removed (retention %gh)", len(report.removed_files), hours
        )
        return report

    # -- erasure ---------------------------------------------------------------

    def participants(self) -> list[Participant]:
        """The Delta table."""
        return [Participant(self.name, self.table.uri, self.confirm_within_s)]

    def erase(self, event: ErasureEvent) -> list[Confirmation]:
        """Delete the user's rows, verify with a scan, record the partitions, report times."""
        return self.erase_many([event])

    def erase_many(self, events: Sequence[ErasureEvent]) -> list[Confirmation]:
        """Erase a run of requests with one DELETE and one verifying scan.

        Each request gets its own confirmation naming its user's partitions and rows,
        and carrying the ids of the user's events found before the DELETE (the ledger
        keeps them sealed for the verification of every store).
        """
        users = list(dict.fromkeys(e.user_id for e in events))
        held = self.table.users_events_by_day(users)
        before = {u: {d: len(ids) for d, ids in days.items()} for u, days in held.items()}
        erased = None
        if any(before.values()):
            ids = ",".join(e.request_id for e in events)
            erased = self.table.erase_users(
                users,
                self.subject,
                metadata={"headwater.erasure.request_id": ids},
                days={d for held in before.values() for d in held},
            )
        version = erased.version if erased is not None else self.table.version()
        after = self.table.users_rows_by_day(users)
        left = {u: sum(days.values()) for u, days in after.items() if days}
        if left:
            raise ArchiveError(
                f"erasure of {len(users)} user(s): {sum(left.values())} row(s) of "
                f"{len(left)} user(s) remain in archive version {self.table.version()} "
                "(rows written under another erasure key are not matched: every process "
                "must share HEADWATER_ERASURE_KEY)"
            )
        erased_at = datetime.now(UTC)
        out = []
        recorded = []
        counted: set[str] = set()
        for event in events:
            days = before[event.user_id]
            # Two requests for one user in a run: the first one removed the rows.
            rows = sum(days.values()) if event.user_id not in counted else 0
            counted.add(event.user_id)
            # What the verification searches every store for, besides the user.
            event_ids = tuple(e for ids in held[event.user_id].values() for e in ids)
            recorded.append(
                ErasureRecord(
                    event.request_id,
                    list(days),
                    table_version=version,
                    rows_removed=rows,
                    at=erased_at,
                    files_removed=0 if erased is None else len(erased.files_removed),
                )
            )
            out.append(
                Confirmation(
                    request_id=event.request_id,
                    participant=self.name,
                    store=self.table.uri,
                    method="delta delete",
                    rows_removed=rows,
                    rows_remaining=0,
                    verified_at=datetime.now(UTC),
                    evidence=self._evidence(sorted(days), version, erased_at, erased),
                    event_ids=event_ids,
                )
            )
        self.ledger.record_erasures(recorded)  # one commit for the run
        return out

    def _evidence(
        self, partitions: list[str], version: int, erased_at: datetime, erased: ErasedFiles | None
    ) -> dict[str, Any]:
        evidence: dict[str, Any] = {
            "table_version": version,
            "partitions": partitions,
            "scan": "count of the user's rows in the current version after the DELETE",
            "predicate": "by subject (the keyed hash): the log names no one",
            "files_removed": 0 if erased is None else len(erased.files_removed),
            "physically_removed_at": format_time(erased_at),
            "physical_removal": "the files that held the user's rows were removed from "
            "storage with the DELETE: no earlier version can be read back",
        }
        if erased is not None and erased.days_rehashed:
            evidence["days_rehashed"] = erased.days_rehashed
        return evidence

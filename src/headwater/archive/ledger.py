"""The archive's erasure ledger: which day partitions each erasure touched, and vacuums.

A small Delta table beside the signals (``<archive_url>/erasures``), so it lives
wherever the archive lives, local disk or object storage. It is append-only: an
erasure retried after a crash appends again, and readers take the union. It never
stores a user id, only request ids, so it may outlive the erased data.

The batch's erasure participant waits for an erasure's entry here before it
recomputes what it derived from those partitions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from headwater.archive.table import ArchiveTable

__all__ = ["ErasureEntry", "ErasureLedger", "ErasureRecord"]

_TS = pa.timestamp("us", tz="UTC")

LEDGER_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),  # "erasure" or "vacuum"
        pa.field("request_id", pa.string()),
        pa.field("partitions", pa.list_(pa.string())),
        pa.field("table_version", pa.int64()),
        pa.field("rows_removed", pa.int64()),
        pa.field("at", _TS, nullable=False),
        pa.field("retention_hours", pa.float64()),
        pa.field("files_removed", pa.int64()),
    ]
)


@dataclass(frozen=True)
class ErasureRecord:
    """One erasure as the archive's consumer records it."""

    request_id: str
    partitions: Sequence[str]
    table_version: int
    rows_removed: int
    at: datetime
    files_removed: int


@dataclass(frozen=True)
class ErasureEntry:
    """An erasure as the archive recorded it (merged over retries)."""

    request_id: str
    partitions: list[str]
    table_version: int
    rows_removed: int
    erased_at: datetime
    #: When the files that held the rows were removed from storage (with the DELETE);
    #: None for erasures recorded before that, whose files went with a later vacuum.
    files_removed_at: datetime | None = None


class ErasureLedger:
    """Erasures and vacuums of one archive."""

    def __init__(self, url: str, *, storage_options: Mapping[str, str] | None = None) -> None:
        self.table = ArchiveTable(
            url,
            storage_options=storage_options,
            name="erasures",
            schema=LEDGER_SCHEMA,
            partition_by=(),
            configuration={},
        )
        # The rows of each data file read so far: files never change once written, so
        # a lookup reads only the files committed since the last one (the batch's
        # participant asks every half second while it waits for an entry).
        self._files: dict[str, list[dict[str, Any]]] = {}

    def record_erasure(
        self,
        request_id: str,
        partitions: Sequence[str],
        *,
        table_version: int,
        rows_removed: int,
        at: datetime,
        files_removed: int,
    ) -> None:
        """Append one erasure's partitions and the files it removed, durably."""
        self.record_erasures(
            [ErasureRecord(request_id, partitions, table_version, rows_removed, at, files_removed)]
        )

    def record_erasures(self, records: Sequence[ErasureRecord]) -> None:
        """Append a run's erasures in one commit."""
        if not records:
            return
        rows = [
            {
                "kind": "erasure",
                "request_id": r.request_id,
                "partitions": sorted(set(r.partitions)),
                "table_version": r.table_version,
                "rows_removed": r.rows_removed,
                "at": r.at,
                "files_removed": r.files_removed,
            }
            for r in records
        ]
        self.table.append(pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA))

    def record_vacuum(self, at: datetime, retention_hours: float, files_removed: int) -> None:
        """Append one vacuum: every file tombstoned before ``at - retention`` is gone."""
        self._append(
            {
                "kind": "vacuum",
                "at": at,
                "retention_hours": retention_hours,
                "files_removed": files_removed,
            }
        )

    def _append(self, row: dict[str, object]) -> None:
        data = pa.Table.from_pylist([row], schema=LEDGER_SCHEMA)
        self.table.append(data)

    def _rows(self) -> list[dict[str, Any]]:
        """Every row of the current version, each data file read once."""
        current = self.table.data_files()
        for gone in set(self._files) - current:
            del self._files[gone]  # compacted or vacuumed: its rows are in another file
        for path in sorted(current - set(self._files)):
            self._files[path] = self.table.read_file(path).to_pylist()
        return [row for rows in self._files.values() for row in rows]

    def erasure(self, request_id: str) -> ErasureEntry | None:
        """The recorded erasure (partitions merged over retries), or None if not recorded."""
        return self.erasures([request_id]).get(request_id)

    def erasures(self, request_ids: Sequence[str]) -> dict[str, ErasureEntry]:
        """The recorded erasures among ``request_ids`` (one read of the ledger for all)."""
        wanted = set(request_ids)
        found: dict[str, list[dict[str, Any]]] = {}
        for r in self._rows():
            if r["kind"] == "erasure" and r["request_id"] in wanted:
                found.setdefault(r["request_id"], []).append(r)
        return {request_id: _entry(request_id, rows) for request_id, rows in found.items()}

    def physically_removed_at(self, entry: ErasureEntry) -> datetime | None:
        """When the files that held an erasure's rows left storage: with the DELETE, or
        (erasures recorded before that) the first vacuum after the retention; None if
        not yet."""
        if entry.files_removed_at is not None:
            return entry.files_removed_at
        erased_at = entry.erased_at
        rows = [r for r in self._rows() if r["kind"] == "vacuum"]
        times = sorted(
            _utc(r["at"])
            for r in rows
            if _utc(r["at"]) - timedelta(hours=float(r["retention_hours"])) >= erased_at
        )
        return times[0] if times else None


def _entry(request_id: str, rows: list[dict[str, Any]]) -> ErasureEntry:
    """One erasure from its rows (a retry appends again: the union of what they say)."""
    return ErasureEntry(
        request_id=request_id,
        partitions=sorted({p for r in rows for p in (r["partitions"] or [])}),
        table_version=max(int(r["table_version"]) for r in rows),
        rows_removed=sum(int(r["rows_removed"]) for r in rows),
        erased_at=min(_utc(r["at"]) for r in rows),
        files_removed_at=min(
            (_utc(r["at"]) for r in rows if r["files_removed"] is not None), default=None
        ),
    )


def _utc(value: object) -> datetime:
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)

"""The archive table's upkeep: compaction of small files and vacuum.

Vacuum removes files unreferenced for longer than the retention, then checkpoints the
log and drops its expired entries, which is when an erased user's id leaves the
table's directory. ``ArchiveTable.vacuum`` and ``ArchiveTable.compact`` call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from headwater.archive.schema import PARTITION_COLUMN

if TYPE_CHECKING:
    from headwater.archive.table import ArchiveTable

__all__ = ["VacuumReport", "compact", "vacuum"]


@dataclass(frozen=True)
class VacuumReport:
    """What one vacuum removed for good, and when."""

    vacuumed_at: datetime
    retention_hours: float
    removed_files: list[str]
    log_cleaned: bool


def vacuum(archive: ArchiveTable, retention_hours: float) -> VacuumReport:
    """Vacuum ``archive`` (what :meth:`ArchiveTable.vacuum` describes)."""
    table = archive.table()
    hours = max(0, int(retention_hours))
    removed = archive._call(
        "vacuum",
        lambda: table.vacuum(
            retention_hours=hours, dry_run=False, enforce_retention_duration=False
        ),
    )
    _set_log_retention(archive, hours)
    archive._call("checkpoint", table.create_checkpoint)
    archive._call("log cleanup", table.cleanup_metadata)
    return VacuumReport(
        vacuumed_at=datetime.now(UTC),
        retention_hours=retention_hours,
        removed_files=[str(f) for f in removed],
        log_cleaned=True,
    )


def _set_log_retention(archive: ArchiveTable, hours: int) -> None:
    # Log cleanup follows the table property, so it follows the configured retention.
    wanted = f"interval {hours * 3600} seconds"
    table = archive.table()
    config = table.metadata().configuration
    if config.get("delta.logRetentionDuration") != wanted:
        archive._call(
            "set log retention",
            lambda: table.alter.set_table_properties(
                {"delta.logRetentionDuration": wanted}, raise_if_not_exists=False
            ),
        )


def compact(archive: ArchiveTable, days: Sequence[str], *, target_size: int | None = None) -> int:
    """Compact the small files of ``days`` (what :meth:`ArchiveTable.compact` describes)."""
    if not days:
        return 0
    table = archive.table()
    metrics = archive._call(
        "compact",
        lambda: table.optimize.compact(
            partition_filters=[(PARTITION_COLUMN, "in", list(days))],
            target_size=target_size,
            writer_properties=archive.writer_properties,
        ),
    )
    return int(metrics.get("numFilesRemoved", 0))

"""The archive: every accepted signal in a Delta Lake table, partitioned by event date.

Local directory by default (``<home>/archive``), object storage by URL; the nightly
batch reads it with DuckDB. The archive is an erasure participant: a Delta DELETE,
a verifying scan, and vacuum after a configurable retention.
"""

from __future__ import annotations

from headwater.archive.consumer import ArchiveConsumer
from headwater.archive.ledger import ErasureEntry, ErasureLedger
from headwater.archive.maintenance import VacuumReport
from headwater.archive.schema import ARCHIVE_SCHEMA, signals_to_arrow
from headwater.archive.settings import ArchiveSettings
from headwater.archive.table import ArchiveTable, DayFiles

__all__ = [
    "ARCHIVE_SCHEMA",
    "ArchiveConsumer",
    "ArchiveSettings",
    "ArchiveTable",
    "DayFiles",
    "ErasureEntry",
    "ErasureLedger",
    "VacuumReport",
    "signals_to_arrow",
]

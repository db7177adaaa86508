"""Opening the archive's Delta table: created empty when missing, and given the
``subject`` column when it was created before that column existed.

``ArchiveTable.table`` calls :func:`open_table` on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from headwater.archive.schema import SUBJECT_COLUMN

if TYPE_CHECKING:
    from headwater.archive.table import ArchiveTable

__all__ = ["open_table"]


def open_table(archive: ArchiveTable) -> Any:
    """The ``DeltaTable`` of ``archive``, created empty (with its schema, partitioning and
    configuration) when missing."""
    dl = archive._dl
    options = archive.storage_options or None
    if not archive.remote:
        Path(archive.uri).mkdir(parents=True, exist_ok=True)
    if dl.DeltaTable.is_deltatable(archive.uri, storage_options=options):
        return _with_subject(archive, dl.DeltaTable(archive.uri, storage_options=options))
    try:
        return dl.DeltaTable.create(
            archive.uri,
            schema=archive.schema,
            partition_by=archive.partition_by or None,
            mode="ignore",
            configuration=archive.configuration,
            storage_options=options,
        )
    except dl.exceptions.DeltaError:
        # Another process created it in the meantime: open theirs.
        return dl.DeltaTable(archive.uri, storage_options=options)


def _with_subject(archive: ArchiveTable, table: Any) -> Any:
    """A table created before the ``subject`` column existed gets it (null in old rows)."""
    if SUBJECT_COLUMN not in archive.schema.names:
        return table
    if SUBJECT_COLUMN in {f.name for f in table.schema().fields}:
        return table
    dl = archive._dl
    table.alter.add_columns(
        [dl.Field(SUBJECT_COLUMN, dl.schema.PrimitiveType("string"), nullable=True)]
    )
    table.update_incremental()
    return table

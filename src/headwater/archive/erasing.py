"""An erasure's changes to the archive table: the DELETE by subject hash and the
physical removal of every file that held the erased rows.

Rows written before the ``subject`` column existed get it first, by a rewrite of their
days; the files the rewrite and the DELETE replaced, and older unreferenced files of
those days that still hold the users' rows, are then deleted from storage.
``ArchiveTable.erase_users`` calls :func:`erase_users`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import pyarrow as pa

from headwater.archive.schema import PARTITION_COLUMN, SUBJECT_COLUMN
from headwater.archive.table import quote_sql

if TYPE_CHECKING:
    from headwater.archive.table import ArchiveTable

__all__ = ["ErasedFiles", "erase_users", "users_events_by_day"]

#: How many unreferenced files' distinct user ids an erasure remembers between runs.
_OLD_FILES_KEPT = 4096


@dataclass(frozen=True)
class ErasedFiles:
    """What one erasure did to the table: rows deleted, the version that no longer holds
    them, and the files that held them, removed from storage at once."""

    rows_deleted: int
    version: int
    files_removed: list[str]
    days_rehashed: list[str]


def erase_users(
    archive: ArchiveTable,
    user_ids: Sequence[str],
    subject: Callable[[str], str],
    *,
    metadata: Mapping[str, str] | None = None,
    days: Iterable[str] | None = None,
) -> ErasedFiles:
    """Delete every row of these users from ``archive``, and the files that held them,
    for good (what :meth:`ArchiveTable.erase_users` describes).

    The DELETE goes by the keyed hash (``subject``), so the commit it leaves in the log
    names no one; rows written before that column existed get it first, by a rewrite
    of their days (whose predicate names only dates). The files that the rewrite and
    the DELETE replaced, and any older unreferenced file of those days that still
    holds one of the users' rows (left by an earlier compaction or DELETE), are then
    removed from storage: no time-travel window keeps erased rows. Files written but
    not yet committed by another writer are never touched: they are referenced by no
    version, and a tombstoned user's rows are never written.
    """
    users = list(dict.fromkeys(user_ids))
    subjects = [subject(u) for u in users]
    before = archive._referenced()
    rehashed = _rehash_days(archive, users, subject)
    dl = archive._dl
    table = archive.table()
    props = dl.CommitProperties(custom_metadata=dict(metadata or {}) or None)
    predicate = f"{SUBJECT_COLUMN} IN ({_in_list(subjects)})"
    if days is not None:
        scope = sorted(set(days) | set(rehashed))
        predicate = f"{PARTITION_COLUMN} IN ({_in_list(scope)}) AND {predicate}"
    metrics = archive._call("delete", lambda: table.delete(predicate, commit_properties=props))
    after = archive._referenced()
    days = {_day_of(p) for p in before - after} | set(rehashed)
    stale = (before - after) | _unreferenced_holding(archive, days, after, users)
    handler = archive._storage()
    for path in sorted(stale):
        archive._call("remove erased file", partial(handler.delete_file, path))
    return ErasedFiles(
        rows_deleted=int(metrics.get("num_deleted_rows", 0)),
        version=archive.version(),
        files_removed=sorted(stale),
        days_rehashed=rehashed,
    )


def users_events_by_day(
    archive: ArchiveTable, user_ids: Sequence[str]
) -> dict[str, dict[str, list[str]]]:
    """The event ids of these users' rows in the current version of ``archive``, in one
    scan: user -> day -> event ids."""
    found: dict[str, dict[str, list[str]]] = {u: {} for u in user_ids}
    if not found:
        return found
    result = archive.query(
        f"SELECT user_id, {PARTITION_COLUMN} AS day, event_id FROM signals "
        f"WHERE user_id IN ({_in_list(found)})"
    )
    for user, day, event_id in zip(
        result.column("user_id").to_pylist(),
        result.column("day").to_pylist(),
        result.column("event_id").to_pylist(),
        strict=True,
    ):
        found[str(user)].setdefault(str(day), []).append(str(event_id))
    return found


def _has_unhashed_rows(archive: ArchiveTable) -> bool:
    """Whether rows written before the ``subject`` column remain (checked until none
    do: every row written since carries it)."""
    if archive._unhashed is None or archive._unhashed:
        found = archive.query(
            f"SELECT 1 AS x FROM {archive.name} WHERE {SUBJECT_COLUMN} IS NULL LIMIT 1"
        )
        archive._unhashed = found.num_rows > 0
    return archive._unhashed


def _rehash_days(
    archive: ArchiveTable, users: list[str], subject: Callable[[str], str]
) -> list[str]:
    """Fill ``subject`` in the days where these users have rows without it."""
    if not _has_unhashed_rows(archive):
        return []
    found = archive.query(
        f"SELECT DISTINCT {PARTITION_COLUMN} AS day FROM {archive.name} "
        f"WHERE {SUBJECT_COLUMN} IS NULL AND user_id IN ({_in_list(users)})"
    )
    days = sorted(str(d) for d in found.column("day").to_pylist())
    if not days:
        return []
    data = archive.read(days=days)
    hashes = pa.array(
        [
            s if s is not None else subject(str(u))
            for u, s in zip(
                data.column("user_id").to_pylist(),
                data.column(SUBJECT_COLUMN).to_pylist(),
                strict=True,
            )
        ],
        type=pa.string(),
    )
    data = data.set_column(data.schema.get_field_index(SUBJECT_COLUMN), SUBJECT_COLUMN, hashes)
    dl = archive._dl
    table = archive.table()

    def write() -> None:
        dl.write_deltalake(
            table,
            data,
            mode="overwrite",
            predicate=f"{PARTITION_COLUMN} IN ({_in_list(days)})",
            partition_by=archive.partition_by or None,
            storage_options=archive.storage_options or None,
            writer_properties=archive.writer_properties,
        )

    archive._call("rehash", write)
    return days


def _unreferenced_holding(
    archive: ArchiveTable, days: set[str], referenced: set[str], users: list[str]
) -> set[str]:
    """Files of ``days`` that no version references and that hold a row of ``users``."""
    import pyarrow.compute as pc
    import pyarrow.fs as pafs

    fs = archive._fs()
    wanted = pa.array(users, type=pa.string())
    found: set[str] = set()
    for day in sorted(days):
        selector = pafs.FileSelector(f"{PARTITION_COLUMN}={day}", allow_not_found=True)
        infos = archive._call("list day", partial(fs.get_file_info, selector))
        for info in infos:
            path = info.path.lstrip("/")
            if not path.endswith(".parquet") or path in referenced:
                continue
            held = archive._old_ids.get(path)
            if held is None:
                # Files never change once written: an old file is read once.
                ids = archive.read_file(path, ["user_id"])
                held = pc.unique(ids.column("user_id").cast(pa.string()))
                if len(archive._old_ids) >= _OLD_FILES_KEPT:
                    archive._old_ids.clear()
                archive._old_ids[path] = held
            if pc.any(pc.is_in(held, value_set=wanted)).as_py():
                found.add(path)
    return found


def _day_of(path: str) -> str:
    for part in path.split("/"):
        if part.startswith(f"{PARTITION_COLUMN}="):
            return part.split("=", 1)[1]
    return ""


def _in_list(values: Iterable[str]) -> str:
    return ", ".join(quote_sql(v) for v in values)

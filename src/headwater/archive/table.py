"""The archive's Delta table: append with bus positions, scan, delete a user, vacuum.

The table lives at ``<archive_url>/signals``: a local directory by default, or object
storage by URL (``s3://bucket/prefix``, ``az://...``, ``gs://...``) with credentials in
``storage_options`` or the usual environment variables that deltalake reads.

Every deltalake error is translated here: a commit that lost a race can be retried
(``BackendUnavailableError``); anything else is an ``ArchiveError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from headwater.archive.schema import (
    ARCHIVE_SCHEMA,
    PARTITION_COLUMN,
    SUBJECT_COLUMN,
    TABLE_CONFIGURATION,
)
from headwater.errors import (
    ArchiveError,
    BackendUnavailableError,
    FencedError,
    MissingDependencyError,
)

__all__ = [
    "ArchiveTable",
    "DayFiles",
    "ErasedFiles",
    "VacuumReport",
    "is_remote",
    "quote_sql",
]

_T = TypeVar("_T")

#: How many unreferenced files' distinct user ids an erasure remembers between runs.
_OLD_FILES_KEPT = 4096


def is_remote(url: str) -> bool:
    """True for object-storage URLs (anything with a scheme other than ``file``)."""
    return "://" in url and not url.startswith("file://")


def quote_sql(value: str) -> str:
    """A SQL string literal (single quotes doubled): the predicates deltalake takes are text."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class DayFiles:
    """The data files of one day partition, and a fingerprint that changes with them."""

    day: str
    files: tuple[str, ...]
    rows: int

    @property
    def fingerprint(self) -> str:
        """A digest of the file names: any append, delete or compaction changes it."""
        return hashlib.sha256("\n".join(sorted(self.files)).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class VacuumReport:
    """What one vacuum removed for good, and when."""

    vacuumed_at: datetime
    retention_hours: float
    removed_files: list[str]
    log_cleaned: bool


@dataclass(frozen=True)
class ErasedFiles:
    """What one erasure did to the table: rows deleted, the version that no longer holds
    them, and the files that held them, removed from storage at once."""

    rows_deleted: int
    version: int
    files_removed: list[str]
    days_rehashed: list[str]


class ArchiveTable:
    """One Delta table of signals, created on first use."""

    def __init__(
        self,
        url: str,
        *,
        storage_options: Mapping[str, str] | None = None,
        name: str = "signals",
        schema: pa.Schema = ARCHIVE_SCHEMA,
        partition_by: Sequence[str] = (PARTITION_COLUMN,),
        configuration: Mapping[str, str | None] | None = None,
    ) -> None:
        try:
            import deltalake
        except ImportError:
            raise MissingDependencyError("archive", "deltalake", "archive") from None
        self._dl = deltalake
        self.root = url.rstrip("/")
        self.name = name
        self.uri = f"{self.root}/{name}"
        self.storage_options = dict(storage_options or {})
        self.schema = schema
        self.partition_by = list(partition_by)
        self.configuration = dict(TABLE_CONFIGURATION if configuration is None else configuration)
        self._table: Any = None
        #: None: not known yet whether rows without ``subject`` remain.
        self._unhashed: bool | None = None
        #: The distinct user ids of unreferenced files read before (see erase_users).
        self._old_ids: dict[str, Any] = {}
        self._handler: Any = None

    # -- boundary --------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        errors = self._dl.exceptions
        try:
            return fn()
        except errors.CommitFailedError as exc:
            if "Concurrent transaction" in str(exc):
                # Another writer recorded a position of the same bus partition since our
                # snapshot: it holds the partition now, and this commit is refused whole.
                raise FencedError(f"archive {self.uri}: {what}: {exc}") from exc
            # Another writer committed first: nothing of ours was committed; retry.
            raise BackendUnavailableError(f"archive {self.uri}: {what}: {exc}") from exc
        except OSError as exc:
            raise BackendUnavailableError(f"archive {self.uri}: {what}: {exc}") from exc
        except (
            errors.DeltaError,
            errors.DeltaProtocolError,
            errors.SchemaMismatchError,
            errors.TableNotFoundError,
            ValueError,
            pa.ArrowException,
        ) as exc:
            raise ArchiveError(f"archive {self.uri}: {what}: {exc}") from exc

    @property
    def remote(self) -> bool:
        """True when the table is on object storage."""
        return is_remote(self.uri)

    def table(self) -> Any:
        """The ``DeltaTable`` at its latest version (created empty when missing)."""
        if self._table is None:
            self._table = self._call("open", self._open)
        else:
            self._call("refresh", self._table.update_incremental)
        return self._table

    def _open(self) -> Any:
        dl = self._dl
        if not self.remote:
            Path(self.uri).mkdir(parents=True, exist_ok=True)
        if dl.DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options or None):
            return self._with_subject(
                dl.DeltaTable(self.uri, storage_options=self.storage_options or None)
            )
        try:
            return dl.DeltaTable.create(
                self.uri,
                schema=self.schema,
                partition_by=self.partition_by or None,
                mode="ignore",
                configuration=self.configuration,
                storage_options=self.storage_options or None,
            )
        except dl.exceptions.DeltaError:
            # Another process created it in the meantime: open theirs.
            return dl.DeltaTable(self.uri, storage_options=self.storage_options or None)

    def _with_subject(self, table: Any) -> Any:
        """A table created before the ``subject`` column existed gets it (null in old rows)."""
        if SUBJECT_COLUMN not in self.schema.names:
            return table
        if SUBJECT_COLUMN in {f.name for f in table.schema().fields}:
            return table
        table.alter.add_columns(
            [self._dl.Field(SUBJECT_COLUMN, self._dl.schema.PrimitiveType("string"), nullable=True)]
        )
        table.update_incremental()
        return table

    # -- writes ----------------------------------------------------------------

    def transaction_versions(
        self, app_ids: Sequence[str], snapshot: Any = None
    ) -> dict[str, int | None]:
        """The version last recorded per ``app_id`` in the table's own commits (Delta txn),
        as of ``snapshot`` (a ``table()`` taken before; the latest when not given)."""
        table = snapshot if snapshot is not None else self.table()

        def read() -> dict[str, int | None]:
            found = {a: table.transaction_version(a) for a in app_ids}
            return {a: None if v is None else int(v) for a, v in found.items()}

        return self._call("read txn", read)

    def append(
        self,
        data: pa.Table,
        *,
        transactions: Mapping[str, int] | None = None,
        metadata: Mapping[str, str] | None = None,
        snapshot: Any = None,
    ) -> int:
        """Append rows and record ``app_id -> version`` in the same atomic commit.

        With ``snapshot`` (the ``table()`` the caller read the versions from), Delta's
        conflict check refuses the commit if another writer recorded one of the same app
        ids since: ``FencedError``, nothing written. Returns the table version created.
        """
        dl = self._dl
        props = dl.CommitProperties(
            custom_metadata=dict(metadata or {}) or None,
            app_transactions=[dl.Transaction(a, v) for a, v in (transactions or {}).items()]
            or None,
        )
        table = snapshot if snapshot is not None else self.table()

        def write() -> None:
            dl.write_deltalake(
                table,
                data,
                mode="append",
                partition_by=self.partition_by or None,
                storage_options=self.storage_options or None,
                commit_properties=props,
                writer_properties=dl.WriterProperties(compression="ZSTD"),
            )

        self._call("append", write)
        return self.version()

    def version(self) -> int:
        """The current table version."""
        return int(self.table().version())

    # -- reads -----------------------------------------------------------------

    def days(self) -> dict[str, DayFiles]:
        """Every day partition with its data files (absolute URIs) and row count."""
        table = self.table()
        actions = pa.table(self._call("list files", lambda: table.get_add_actions(flatten=True)))
        paths = actions.column("path").to_pylist()
        dates = actions.column(f"partition.{PARTITION_COLUMN}").to_pylist()
        rows = actions.column("num_records").to_pylist()
        found: dict[str, tuple[list[str], int]] = {}
        for path, day, n in zip(paths, dates, rows, strict=True):
            files, count = found.get(day, ([], 0))
            files.append(self._absolute(path))
            found[day] = (files, count + int(n or 0))
        return {d: DayFiles(d, tuple(sorted(f)), n) for d, (f, n) in sorted(found.items())}

    def row_count(self, snapshot: Any = None) -> int:
        """The rows of the current version (or of ``snapshot``), from the Delta log."""
        table = snapshot if snapshot is not None else self.table()
        actions = pa.table(self._call("list files", lambda: table.get_add_actions(flatten=True)))
        return sum(int(n or 0) for n in actions.column("num_records").to_pylist())

    def _absolute(self, path: str) -> str:
        if "://" in path or path.startswith("/"):
            return path
        return f"{self.uri}/{path}"

    def snapshot(self) -> Any:
        """The current version as a ``DeltaTable`` of its own, pinned: reads through it
        (``read(snapshot=...)``, ``transaction_versions``) see that version only, however
        the table moves on meanwhile."""
        version = self.version()
        return self._call(
            "snapshot",
            lambda: self._dl.DeltaTable(
                self.uri, version=version, storage_options=self.storage_options or None
            ),
        )

    def read(
        self,
        columns: Sequence[str] | None = None,
        *,
        days: Sequence[str] | None = None,
        snapshot: Any = None,
        event_types: Sequence[str] | None = None,
    ) -> pa.Table:
        """Rows of the current version as Arrow (optionally some days, event types and
        columns; the filters are applied while the files are read).

        Works on every storage deltalake supports; local scans can also go through DuckDB
        ``read_parquet`` on the files of :meth:`days`. ``snapshot`` (from :meth:`snapshot`)
        reads that version instead of the current one.
        """
        table = snapshot if snapshot is not None else self.table()
        if days is not None and not days:
            return self.schema.empty_table().select(list(columns or self.schema.names))
        if event_types is not None and not event_types:
            return self.schema.empty_table().select(list(columns or self.schema.names))
        filters: list[tuple[str, str, Any]] | None = None
        if days is not None or event_types is not None:
            filters = [(PARTITION_COLUMN, "in", list(days))] if days is not None else []
            if event_types is not None:
                filters.append(("event_type", "in", list(event_types)))
        return self._call(
            "read",
            lambda: table.to_pyarrow_table(
                filters=filters, columns=list(columns) if columns else None
            ),
        )

    def relation(
        self,
        con: Any,
        files: Mapping[str, DayFiles],
        columns: Sequence[str],
        days: Sequence[str] | None = None,
    ) -> str:
        """A DuckDB relation over the rows of ``days`` (all days if None) on ``con``.

        Local tables are read in place with ``read_parquet`` (the files of the current
        version only); object storage goes through deltalake into Arrow, because
        DuckDB's own object-store support is an extension that may not be installable.
        """
        wanted = [d for d in (files if days is None else days) if d in files]
        paths = [f for d in wanted for f in files[d].files]
        if paths and not self.remote:
            listed = ", ".join(quote_sql(p) for p in paths)
            return (
                f"read_parquet([{listed}], hive_partitioning = true, "
                f"hive_types = {{'date': VARCHAR}}, union_by_name = true)"
            )
        data = self.read(list(columns), days=wanted)
        name = f"archive_rows_{id(data)}"
        con.register(name, data)
        return name

    def query(self, sql: str) -> pa.Table:
        """A DataFusion SQL query over the current version (the table goes by its name)."""
        table = self.table()

        def run() -> pa.Table:
            reader = self._dl.QueryBuilder().register(self.name, table).execute(sql)
            return pa.table(reader.read_all())

        return self._call("query", run)

    def user_rows_by_day(self, user_id: str) -> dict[str, int]:
        """How many rows of ``user_id`` each day partition holds in the current version."""
        return self.users_rows_by_day([user_id])[user_id]

    def users_rows_by_day(self, user_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """``user_rows_by_day`` for many users in one scan: user -> day -> rows."""
        return {
            user: {day: len(ids) for day, ids in days.items()}
            for user, days in self.users_events_by_day(user_ids).items()
        }

    def users_events_by_day(self, user_ids: Sequence[str]) -> dict[str, dict[str, list[str]]]:
        """The event ids of these users' rows in the current version, in one scan:
        user -> day -> event ids."""
        found: dict[str, dict[str, list[str]]] = {u: {} for u in user_ids}
        if not found:
            return found
        result = self.query(
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

    # -- erasure ---------------------------------------------------------------

    def erase_users(
        self,
        user_ids: Sequence[str],
        subject: Callable[[str], str],
        *,
        metadata: Mapping[str, str] | None = None,
        days: Iterable[str] | None = None,
    ) -> ErasedFiles:
        """Delete every row of these users, and the files that held them, for good.

        ``days``, when given, are the day partitions that hold the users' rows (from a
        scan just before): the DELETE reads only those partitions' files instead of the
        whole table. A row written elsewhere in between is found by the caller's
        verifying scan, which covers every day.

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
        before = self._referenced()
        rehashed = self._rehash_days(users, subject)
        dl = self._dl
        table = self.table()
        props = dl.CommitProperties(custom_metadata=dict(metadata or {}) or None)
        predicate = f"{SUBJECT_COLUMN} IN ({_in_list(subjects)})"
        if days is not None:
            scope = sorted(set(days) | set(rehashed))
            predicate = f"{PARTITION_COLUMN} IN ({_in_list(scope)}) AND {predicate}"
        metrics = self._call("delete", lambda: table.delete(predicate, commit_properties=props))
        after = self._referenced()
        days = {_day_of(p) for p in before - after} | set(rehashed)
        stale = (before - after) | self._unreferenced_holding(days, after, users)
        handler = self._storage()
        for path in sorted(stale):
            self._call("remove erased file", partial(handler.delete_file, path))
        return ErasedFiles(
            rows_deleted=int(metrics.get("num_deleted_rows", 0)),
            version=self.version(),
            files_removed=sorted(stale),
            days_rehashed=rehashed,
        )

    def data_files(self) -> set[str]:
        """The data files of the latest version (paths relative to the table)."""
        return self._referenced()

    def read_file(self, path: str, columns: Sequence[str] | None = None) -> pa.Table:
        """One data file of the table (``path`` relative to it), as written."""
        import pyarrow.parquet as pq

        read = partial(pq.read_table, path, columns=columns, filesystem=self._fs())
        return self._call("read file", read)

    def _referenced(self) -> set[str]:
        table = self.table()
        actions = pa.table(self._call("list files", lambda: table.get_add_actions(flatten=True)))
        return {str(p) for p in actions.column("path").to_pylist()}

    def _storage(self) -> Any:
        if self._handler is None:
            from deltalake.fs import DeltaStorageHandler

            self._handler = DeltaStorageHandler(self.uri, self.storage_options or None)
        return self._handler

    def _fs(self) -> Any:
        """The table's storage as a pyarrow file system (paths relative to the table)."""
        import pyarrow.fs as pafs

        return pafs.PyFileSystem(self._storage())

    def _has_unhashed_rows(self) -> bool:
        """Whether rows written before the ``subject`` column remain (checked until none
        do: every row written since carries it)."""
        if self._unhashed is None or self._unhashed:
            found = self.query(
                f"SELECT 1 AS x FROM {self.name} WHERE {SUBJECT_COLUMN} IS NULL LIMIT 1"
            )
            self._unhashed = found.num_rows > 0
        return self._unhashed

    def _rehash_days(self, users: list[str], subject: Callable[[str], str]) -> list[str]:
        """Fill ``subject`` in the days where these users have rows without it."""
        if not self._has_unhashed_rows():
            return []
        found = self.query(
            f"SELECT DISTINCT {PARTITION_COLUMN} AS day FROM {self.name} "
            f"WHERE {SUBJECT_COLUMN} IS NULL AND user_id IN ({_in_list(users)})"
        )
        days = sorted(str(d) for d in found.column("day").to_pylist())
        if not days:
            return []
        data = self.read(days=days)
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
        dl = self._dl
        table = self.table()

        def write() -> None:
            dl.write_deltalake(
                table,
                data,
                mode="overwrite",
                predicate=f"{PARTITION_COLUMN} IN ({_in_list(days)})",
                partition_by=self.partition_by or None,
                storage_options=self.storage_options or None,
                writer_properties=dl.WriterProperties(compression="ZSTD"),
            )

        self._call("rehash", write)
        return days

    def _unreferenced_holding(
        self, days: set[str], referenced: set[str], users: list[str]
    ) -> set[str]:
        """Files of ``days`` that no version references and that hold a row of ``users``."""
        import pyarrow.compute as pc
        import pyarrow.fs as pafs

        fs = self._fs()
        wanted = pa.array(users, type=pa.string())
        found: set[str] = set()
        for day in sorted(days):
            selector = pafs.FileSelector(f"{PARTITION_COLUMN}={day}", allow_not_found=True)
            infos = self._call("list day", partial(fs.get_file_info, selector))
            for info in infos:
                path = info.path.lstrip("/")
                if not path.endswith(".parquet") or path in referenced:
                    continue
                held = self._old_ids.get(path)
                if held is None:
                    # Files never change once written: an old file is read once.
                    ids = self.read_file(path, ["user_id"])
                    held = pc.unique(ids.column("user_id").cast(pa.string()))
                    if len(self._old_ids) >= _OLD_FILES_KEPT:
                        self._old_ids.clear()
                    self._old_ids[path] = held
                if pc.any(pc.is_in(held, value_set=wanted)).as_py():
                    found.add(path)
        return found

    def vacuum(self, retention_hours: float) -> VacuumReport:
        """Remove files unreferenced for longer than the retention, then expired log entries.

        The log holds the DELETE's predicate (which names the user) and the removed files'
        entries: a checkpoint followed by log cleanup drops commits older than the
        retention, so after both the user's id is nowhere in the table's directory.
        """
        table = self.table()
        hours = max(0, int(retention_hours))
        removed = self._call(
            "vacuum",
            lambda: table.vacuum(
                retention_hours=hours, dry_run=False, enforce_retention_duration=False
            ),
        )
        self._set_log_retention(hours)
        self._call("checkpoint", table.create_checkpoint)
        self._call("log cleanup", table.cleanup_metadata)
        return VacuumReport(
            vacuumed_at=datetime.now(UTC),
            retention_hours=retention_hours,
            removed_files=[str(f) for f in removed],
            log_cleaned=True,
        )

    def _set_log_retention(self, hours: int) -> None:
        # Log cleanup follows the table property, so it follows the configured retention.
        wanted = f"interval {hours * 3600} seconds"
        table = self.table()
        config = table.metadata().configuration
        if config.get("delta.logRetentionDuration") != wanted:
            self._call(
                "set log retention",
                lambda: table.alter.set_table_properties(
                    {"delta.logRetentionDuration": wanted}, raise_if_not_exists=False
                ),
            )

    def compact(self, days: Sequence[str], *, target_size: int | None = None) -> int:
        """Rewrite the small files of some days into large ones; files removed.

        ``target_size`` (bytes): only files smaller than it are merged, into files of
        about that size (default: the table's target, 100 MB).
        """
        if not days:
            return 0
        table = self.table()
        dl = self._dl
        metrics = self._call(
            "compact",
            lambda: table.optimize.compact(
                partition_filters=[(PARTITION_COLUMN, "in", list(days))],
                target_size=target_size,
                writer_properties=dl.WriterProperties(compression="ZSTD"),
            ),
        )
        return int(metrics.get("numFilesRemoved", 0))

    def close(self) -> None:
        """Drop the cached table handle."""
        self._table = None


def _day_of(path: str) -> str:
    for part in path.split("/"):
        if part.startswith(f"{PARTITION_COLUMN}="):
            return part.split("=", 1)[1]
    return ""


def _in_list(values: Iterable[str]) -> str:
    return ", ".join(quote_sql(v) for v in values)

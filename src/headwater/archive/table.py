"""The archive's Delta table: append with bus positions, scan, delete a user, vacuum.

``ArchiveTable`` holds the connection, the writes and the reads; opening the table is in
``archive.opening``, an erasure's DELETE and file removal in ``archive.erasing``,
compaction and vacuum in ``archive.maintenance``.

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
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from headwater.archive import maintenance
from headwater.archive.opening import open_table
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

if TYPE_CHECKING:
    from headwater.archive.erasing import ErasedFiles
    from headwater.archive.maintenance import VacuumReport

__all__ = ["ArchiveTable", "DayFiles", "is_remote", "quote_sql"]

_T = TypeVar("_T")

#: Columns whose values are all distinct within a file (an id per event): Parquet's
#: writer would build a dictionary for each column chunk only to give it up, and their
#: min/max filter nothing. Written plain and without statistics: about a fifth less of
#: the writer's CPU a row and 7% smaller files in a scratch measurement, 3-10% less of
#: the consumer's ``handle`` in bench/bench_archive.py (BENCHMARKS.md).
#: ``payload`` keeps its dictionary: its values repeat, and the nightly batch's reads of
#: it were slower without.
_DISTINCT_COLUMNS = ("event_id",)


def _writer_properties(deltalake: Any) -> Any:
    """The Parquet writer's settings for every file the archive writes: ZSTD; no dictionary
    or statistics for ``_DISTINCT_COLUMNS``; no statistics for ``subject`` (a keyed hash,
    whose min/max prune nothing), which keeps its dictionary (it repeats per user)."""
    column = deltalake.ColumnProperties
    plain = {
        c: column(dictionary_enabled=False, statistics_enabled="NONE") for c in _DISTINCT_COLUMNS
    }
    return deltalake.WriterProperties(
        compression="ZSTD",
        column_properties={**plain, SUBJECT_COLUMN: column(statistics_enabled="NONE")},
    )


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
        #: The Parquet writer's settings of every file written (``_writer_properties``).
        self.writer_properties = _writer_properties(deltalake)
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
            self._table = self._call("open", partial(open_table, self))
        else:
            self._call("refresh", self._table.update_incremental)
        return self._table

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
                writer_properties=self.writer_properties,
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
        from headwater.archive.erasing import users_events_by_day

        return users_events_by_day(self, user_ids)

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

        No time-travel window keeps erased rows: see :func:`headwater.archive.erasing.erase_users`.
        """
        from headwater.archive.erasing import erase_users

        return erase_users(self, user_ids, subject, metadata=metadata, days=days)

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

    def vacuum(self, retention_hours: float) -> VacuumReport:
        """Remove files unreferenced for longer than the retention, then expired log entries.

        The log holds the DELETE's predicate (which names the user) and the removed files'
        entries: a checkpoint followed by log cleanup drops commits older than the
        retention, so after both the user's id is nowhere in the table's directory.
        """
        return maintenance.vacuum(self, retention_hours)

    def compact(self, days: Sequence[str], *, target_size: int | None = None) -> int:
        """Rewrite the small files of some days into large ones; files removed.

        ``target_size`` (bytes): only files smaller than it are merged, into files of
        about that size (default: the table's target, 100 MB).
        """
        return maintenance.compact(self, days, target_size=target_size)

    def close(self) -> None:
        """Drop the cached table handle."""
        self._table = None

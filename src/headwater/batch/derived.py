"""The batch's derived day aggregates: Parquet files beside the archive, one directory per
table and day.

``<archive_url>/_batch/<table>/date=YYYY-MM-DD/part-<run>-<n>.parquet``, on whatever
storage the archive is on (local disk or object storage, with the archive's storage
options), so every host that shares the archive reads the same outputs. A day's files
are replaced by writing the new ones under new names, then deleting every other file
of that day: superseded files are removed for good, never left beside the new ones.
These files hold user ids (``user_item_day``): they are a store of their own that
erasure recomputes.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from headwater.archive.table import is_remote, quote_sql
from headwater.batch.sql import DAY_TABLES, EMPTY
from headwater.errors import ArchiveError, MissingDependencyError

__all__ = ["OUTPUTS_DIR", "DerivedStore"]

#: The directory under the archive's root that holds the batch's outputs.
OUTPUTS_DIR = "_batch"
_ROWS = 100_000


class DerivedStore:
    """Day aggregate files of the batch, on the archive's storage."""

    def __init__(self, url: str, *, storage_options: Mapping[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.remote = is_remote(self.url)
        self.fs: pafs.FileSystem
        if self.remote:
            try:
                from deltalake.fs import DeltaStorageHandler
            except ImportError:
                raise MissingDependencyError("batch", "deltalake", "archive") from None
            handler = DeltaStorageHandler(self.url, dict(storage_options or {}) or None)
            self.fs = pafs.PyFileSystem(handler)
            self._base = ""
        else:
            local = Path(self.url.removeprefix("file://")).expanduser().resolve()
            local.mkdir(parents=True, exist_ok=True)
            self.fs = pafs.LocalFileSystem()
            self._base = str(local)

    # -- paths -----------------------------------------------------------------

    def _path(self, relative: str) -> str:
        return f"{self._base}/{relative}" if self._base else relative

    def _relative(self, path: str) -> str:
        if self._base and path.startswith(self._base + "/"):
            return path[len(self._base) + 1 :]
        return path.lstrip("/")

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (OSError, pa.ArrowException) as exc:
            raise ArchiveError(f"batch outputs {self.url}: {what}: {exc}") from exc

    def _listing(self, table: str) -> dict[str, list[str]]:
        """day -> the relative paths of ``table``'s files of that day."""
        selector = pafs.FileSelector(self._path(table), allow_not_found=True, recursive=True)
        infos = self._call("list", self.fs.get_file_info, selector)
        found: dict[str, list[str]] = {}
        for info in infos:
            if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
                continue
            rel = self._relative(info.path)
            parts = rel.split("/")
            if len(parts) == 3 and parts[1].startswith("date="):
                found.setdefault(parts[1][5:], []).append(rel)
        return {d: sorted(f) for d, f in sorted(found.items())}

    # -- reads -----------------------------------------------------------------

    def days(self, table: str = "user_item_day") -> list[str]:
        """Days that have files for ``table``."""
        return list(self._listing(table))

    def files(
        self,
        table: str,
        *,
        start: str | None = None,
        end: str | None = None,
        days: Iterable[str] | None = None,
    ) -> list[str]:
        """The files (relative to the outputs' root) of ``table`` for days in
        ``[start, end]`` or among ``days``."""
        wanted = set(days) if days is not None else None
        out: list[str] = []
        for day, files in self._listing(table).items():
            if (start and day < start) or (end and day > end):
                continue
            if wanted is not None and day not in wanted:
                continue
            out.extend(files)
        return out

    def all_files(self) -> list[str]:
        """Every file of every day table (what an erasure checks for leftovers)."""
        return [f for table in DAY_TABLES for f in self.files(table)]

    def relation(
        self,
        con: Any,
        table: str,
        *,
        start: str | None = None,
        end: str | None = None,
        days: Iterable[str] | None = None,
    ) -> str:
        """A DuckDB relation over some of ``table``'s files (typed and empty when none).

        Local files are read in place; object storage goes through the archive's storage
        options into Arrow (DuckDB's object-store extension may not be installable).
        """
        files = self.files(table, start=start, end=end, days=days)
        if not files:
            return f"({EMPTY[table]})"
        if not self.remote:
            listed = ", ".join(quote_sql(self._path(f)) for f in files)
            # By name: a day written before a column was added reads it as NULL.
            return (
                f"read_parquet([{listed}], hive_partitioning = true, "
                f"hive_types = {{'date': VARCHAR}}, union_by_name = true)"
            )
        parts = []
        for f in files:
            part = self._call("read", pq.read_table, self._path(f), filesystem=self.fs)
            day = f.split("/")[1][5:]
            parts.append(part.append_column("date", pa.array([day] * part.num_rows, pa.string())))
        data = pa.concat_tables(parts, promote_options="default")
        name = f"derived_{table}_{uuid.uuid4().hex[:12]}"
        con.register(name, data)
        return f"(SELECT * FROM {name})"

    # -- writes ----------------------------------------------------------------

    def replace(
        self, con: Any, outputs: Mapping[str, str], days: Sequence[str]
    ) -> tuple[list[str], list[str]]:
        """Write each day table's rows (a query per table, partitioned by ``date``) under
        new names, then delete every other file of ``days``; (written, removed) paths.

        A day the queries return no row for ends with no file.
        """
        token = uuid.uuid4().hex[:12]
        written: list[str] = []
        for table, sql in outputs.items():
            reader = con.sql(sql).to_arrow_reader(_ROWS)
            partitioning = ds.partitioning(pa.schema([reader.schema.field("date")]), flavor="hive")
            self._call(
                "write",
                ds.write_dataset,
                reader,
                self._path(table),
                format="parquet",
                filesystem=self.fs,
                partitioning=partitioning,
                basename_template=f"part-{token}-{{i}}.parquet",
                existing_data_behavior="overwrite_or_ignore",
                file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
                file_visitor=lambda f: written.append(self._relative(f.path)),
                max_partitions=max(1024, len(days) + 1),
            )
        keep = set(written)
        removed = [f for f in self.files_of(days) if f not in keep]
        self.delete(removed)
        return sorted(written), removed

    def files_of(self, days: Sequence[str]) -> list[str]:
        """Every table's files of ``days``."""
        return [f for table in DAY_TABLES for f in self.files(table, days=days)]

    def delete(self, files: Sequence[str]) -> None:
        """Delete files for good (and, on local disk, the day directories left empty)."""
        for f in files:
            self._call("delete", self.fs.delete_file, self._path(f))
        if not self.remote:
            for parent in sorted({Path(self._path(f)).parent for f in files}):
                with contextlib.suppress(OSError):  # not empty: the day's new files are there
                    parent.rmdir()

    def drop(self, days: Sequence[str]) -> list[str]:
        """Remove every table's files for ``days`` (past the lookback window)."""
        files = self.files_of(days)
        self.delete(files)
        return files

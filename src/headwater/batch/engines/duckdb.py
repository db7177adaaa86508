"""The embedded engine: DuckDB in this process, memory bound, spilling to disk."""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from headwater.archive.table import quote_sql
from headwater.batch.settings import BatchSettings
from headwater.errors import ArchiveError, MissingDependencyError

__all__ = ["DuckDBEngine"]


class DuckDBEngine:
    """The default engine: the batch's SQL as written, on this machine."""

    name = "duckdb"

    def __init__(self, cfg: BatchSettings) -> None:
        self.cfg = cfg
        self._database: Any = None
        self._cleanup: Callable[[], object] = lambda: None
        self._lock = threading.Lock()

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A DuckDB connection configured for the batch (UTC, memory bound, spill dir).

        Each is a connection of its own (its temporary tables and registered data are its
        own, gone when it closes) to one in-memory database the engine keeps: opening a
        database costs 12 ms on an idle machine and several times that under load, paid
        by every erasure the batch's participant applies."""
        try:
            import duckdb
        except ImportError:
            raise MissingDependencyError("batch", "duckdb", "archive") from None
        con = self._open(duckdb).cursor()
        try:
            con.execute("SET TimeZone = 'UTC'")  # a setting of each connection
            yield con
        except duckdb.Error as exc:
            raise ArchiveError(f"batch query failed: {exc}") from exc
        finally:
            con.close()

    def _open(self, duckdb: Any) -> Any:
        """The engine's database, made at first use with the batch's limits (settings of
        the whole database)."""
        with self._lock:
            if self._database is None:
                database = duckdb.connect()
                # Spill files are this process's own business: a private directory,
                # removed when the engine closes (or the process exits).
                spill = Path(tempfile.mkdtemp(prefix="headwater-batch-"))
                self._cleanup = weakref.finalize(self, shutil.rmtree, spill, ignore_errors=True)
                database.execute(f"SET memory_limit = {quote_sql(self.cfg.memory_limit)}")
                database.execute(f"SET temp_directory = {quote_sql(str(spill))}")
                database.execute("SET preserve_insertion_order = false")
                if self.cfg.threads:
                    database.execute(f"SET threads = {int(self.cfg.threads)}")
                self._database = database
            return self._database

    def close(self) -> None:
        """Close the database and remove its spill directory."""
        with self._lock:
            database, self._database = self._database, None
        if database is not None:
            database.close()
            self._cleanup()

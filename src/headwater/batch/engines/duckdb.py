"""The embedded engine: one DuckDB connection per run, memory bound, spilling to disk."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
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

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A DuckDB connection configured for the batch (UTC, memory bound, spill dir)."""
        try:
            import duckdb
        except ImportError:
            raise MissingDependencyError("batch", "duckdb", "archive") from None
        con = duckdb.connect()
        # Spill files are this process's own business: a private directory, removed after.
        spill = Path(tempfile.mkdtemp(prefix="headwater-batch-"))
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.execute(f"SET memory_limit = {quote_sql(self.cfg.memory_limit)}")
            con.execute(f"SET temp_directory = {quote_sql(str(spill))}")
            con.execute("SET preserve_insertion_order = false")
            if self.cfg.threads:
                con.execute(f"SET threads = {int(self.cfg.threads)}")
            yield con
        except duckdb.Error as exc:
            raise ArchiveError(f"batch query failed: {exc}") from exc
        finally:
            con.close()
            shutil.rmtree(spill, ignore_errors=True)

    def close(self) -> None:
        """Nothing held between runs."""

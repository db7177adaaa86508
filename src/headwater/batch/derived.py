"""The batch's derived day aggregates: Parquet files, one directory per table and day.

``<batch_dir>/derived/<table>/date=YYYY-MM-DD/*.parquet``. A chunk of days is written
to a staging directory first and then moved into place day by day, so a day's files
are always those of one computation. These files hold user ids (``user_item_day``):
they are a store of their own that erasure recomputes.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

from headwater.archive.table import quote_sql
from headwater.batch.sql import DAY_TABLES, EMPTY

__all__ = ["DerivedStore"]


class DerivedStore:
    """Day aggregate files of the batch."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _dir(self, table: str, day: str) -> Path:
        return self.root / table / f"date={day}"

    def days(self, table: str = "user_item_day") -> list[str]:
        """Days that have files for ``table``."""
        base = self.root / table
        if not base.exists():
            return []
        return sorted(
            p.name[5:]
            for p in base.iterdir()
            if p.name.startswith("date=") and any(p.glob("*.parquet"))
        )

    def files(
        self,
        table: str,
        *,
        start: str | None = None,
        end: str | None = None,
        days: Iterable[str] | None = None,
    ) -> list[str]:
        """The files of ``table`` for days in ``[start, end]`` or among ``days``."""
        wanted = set(days) if days is not None else None
        out: list[str] = []
        for day in self.days(table):
            if (start and day < start) or (end and day > end):
                continue
            if wanted is not None and day not in wanted:
                continue
            out.extend(str(p) for p in sorted(self._dir(table, day).glob("*.parquet")))
        return out

    def relation(
        self,
        table: str,
        *,
        start: str | None = None,
        end: str | None = None,
        days: Iterable[str] | None = None,
    ) -> str:
        """A DuckDB relation over some of ``table``'s files (typed and empty when none)."""
        files = self.files(table, start=start, end=end, days=days)
        if not files:
            return f"({EMPTY[table]})"
        listed = ", ".join(quote_sql(f) for f in files)
        return (
            f"read_parquet([{listed}], hive_partitioning = true, hive_types = {{'date': VARCHAR}})"
        )

    def staging(self) -> Path:
        """A fresh staging directory under the store (same file system: renames are cheap)."""
        path = self.root / f".staging-{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        return path

    def install(self, staged: Path, days: Sequence[str]) -> None:
        """Move each staged day into place; a day with no staged files is removed."""
        for table in DAY_TABLES:
            for day in days:
                target = self._dir(table, day)
                new = staged / table / f"date={day}"
                old = None
                if target.exists():
                    old = target.with_name(f".old-{uuid.uuid4().hex[:8]}-{target.name}")
                    target.rename(old)
                if new.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    new.rename(target)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(staged, ignore_errors=True)

    def drop(self, days: Sequence[str]) -> None:
        """Remove every table's files for ``days`` (past the lookback window)."""
        for table in DAY_TABLES:
            for day in days:
                shutil.rmtree(self._dir(table, day), ignore_errors=True)

    def clean_staging(self) -> None:
        """Remove what an interrupted run left behind."""
        for leftover in self.root.glob(".staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for table in DAY_TABLES:
            for leftover in (self.root / table).glob(".old-*"):
                shutil.rmtree(leftover, ignore_errors=True)

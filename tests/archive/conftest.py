"""Archive fixtures: a real Delta table and ledger in the test's directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.archive import ArchiveConsumer, ArchiveTable, ErasureLedger
from tests.archive._history import SUBJECT


@pytest.fixture
def archive_url(tmp_path: Path) -> str:
    return str(tmp_path / "archive")


@pytest.fixture
def consumer(archive_url: str) -> Iterator[ArchiveConsumer]:
    c = ArchiveConsumer(
        ArchiveTable(archive_url),
        ErasureLedger(archive_url),
        SUBJECT,
        retention_hours=0,
        vacuum_interval_s=None,
    )
    yield c
    c.table.close()

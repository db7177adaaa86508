"""Batch fixtures: an archive with history, an online store (SQLite or Redis), a runner."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from headwater.archive import ArchiveConsumer, ArchiveTable, ErasureLedger
from headwater.batch import ITEM_COVIS, ITEM_POP, USER_BATCH, BatchRunner, BatchSettings
from headwater.batch.engines import BatchEngine
from headwater.control import open_control_database
from headwater.online import OnlineStore, open_online_store
from tests.archive._history import SUBJECT
from tests.conftest import IN_CI, server_url

UNTIL = date(2026, 3, 12)


@pytest.fixture(scope="session")
def spark_engine() -> Iterator[BatchEngine]:
    """One Spark engine (``local[2]``) for the whole session: a session costs ~12 s to
    start. Without pyspark or Java: skipped locally, a failure under ``CI=true``."""
    from headwater.batch.engines.spark import SparkEngine
    from headwater.errors import ArchiveError, MissingDependencyError

    engine = SparkEngine(small_settings(engine="spark", spark_master="local[2]"))
    try:
        engine.session()
    except (MissingDependencyError, ArchiveError) as exc:
        message = f"the Spark batch engine cannot start: {exc}"
        if IN_CI:
            pytest.fail(f"{message}; CI requires it", pytrace=False)
        pytest.skip(message)
    yield engine
    engine.close()


def small_settings(**changes: object) -> BatchSettings:
    return BatchSettings(
        covis_min_support=1,
        days_per_chunk=3,
        memory_limit="1GB",
        threads=2,
        covis_items_per_user_day=1000,
        **changes,  # type: ignore[arg-type]
    )


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'online.db'}"
        return
    url = f"{server_url('redis')}?prefix=t{uuid.uuid4().hex[:10]}"
    yield url
    store = open_online_store(url)
    for ns in (USER_BATCH, ITEM_COVIS, ITEM_POP):
        store.clear(ns)
    store.close()


@pytest.fixture
def store(store_url: str) -> Iterator[OnlineStore]:
    s = open_online_store(store_url)
    yield s
    s.close()


def make_archive(root: Path) -> ArchiveConsumer:
    url = str(root)
    return ArchiveConsumer(
        ArchiveTable(url), ErasureLedger(url), SUBJECT, retention_hours=0, vacuum_interval_s=None
    )


def make_runner(
    archive: ArchiveTable,
    store: OnlineStore,
    control: Path | str,
    *,
    engine: BatchEngine | None = None,
    **changes: object,
) -> BatchRunner:
    """A runner over ``archive`` whose state is in the control plane ``control`` (a URL,
    or a directory for a SQLite control plane of its own), on ``engine`` (a shared one,
    such as the session's Spark engine) or the settings' own (DuckDB)."""
    if isinstance(control, Path):
        control.mkdir(parents=True, exist_ok=True)
        control = f"sqlite:///{control / 'control.db'}"
    return BatchRunner(
        archive, store, small_settings(**changes), open_control_database(control), engine=engine
    )


def snapshot(store: OnlineStore, namespace: str) -> dict[str, bytes]:
    return store.get(namespace, sorted(store.keys(namespace)))

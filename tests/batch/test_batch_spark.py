"""The batch on Spark agrees with the batch on DuckDB: the same archive gives the same day
aggregates and the same online rows, and an erasure recomputed on Spark passes the same
verification.

Tolerance: text, integers and orderings are compared exactly; floating-point values
(weights, scores, spend, affinity shares) within a relative 1e-9 (``math.isclose``),
since each engine adds in its own order. The JSON texts are compared once parsed: the
two engines spell some numbers differently (DuckDB ``0.0001``, Spark ``1.0E-4``).

One Spark session (``spark_engine``, ``local[2]``) serves every test; Spark runs are
few, since each costs seconds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from headwater.application import Application
from headwater.archive import ArchiveConsumer, ArchiveTable
from headwater.batch import (
    ITEM_COVIS,
    ITEM_POP,
    USER_BATCH,
    BatchErasureParticipant,
    BatchRunner,
    default_batch_features,
)
from headwater.batch.declared import parse_batch_features
from headwater.batch.derived import DerivedStore
from headwater.batch.engines import BatchEngine
from headwater.batch.sql import DAY_TABLES
from headwater.cli import batch as batch_cli
from headwater.config import Settings
from headwater.contract.signal import Signal
from headwater.control import open_control_database
from headwater.erasure.events import ErasureEvent
from headwater.online import OnlineStore, open_online_store
from tests.archive._history import START, history, records, signal, without_user
from tests.batch.conftest import UNTIL, make_archive, small_settings, snapshot
from tests.batch.test_declared_batch import DECLARED

pytestmark = pytest.mark.spark

REL_TOL = 1e-9
VICTIM = "victim"


def same(a: Any, b: Any, path: str = "") -> list[str]:
    """Where ``a`` and ``b`` differ: exact except floats (``REL_TOL``)."""
    if isinstance(a, float) or isinstance(b, float):
        ok = isinstance(a, int | float) and isinstance(b, int | float)
        if ok and math.isclose(float(a), float(b), rel_tol=REL_TOL):
            return []
        return [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a.keys() ^ b.keys())[:5]} differ"]
        return [d for k in a for d in same(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} != {len(b)} items"]
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in same(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def online(store: OnlineStore, namespaces: list[str]) -> dict[str, dict[str, Any]]:
    return {ns: {k: json.loads(v) for k, v in snapshot(store, ns).items()} for ns in namespaces}


def day_tables(derived: DerivedStore) -> dict[str, list[dict[str, Any]]]:
    """Every row of every day table (local files), in a total order: row for row."""
    out: dict[str, list[dict[str, Any]]] = {}
    for table in DAY_TABLES:
        rows = [
            {**row, "date": f.split("/")[1][5:]}
            for f in derived.files(table)
            for row in pq.read_table(Path(derived.url) / f).to_pylist()
        ]
        keys = [c for c in rows[0] if not isinstance(rows[0][c], float)] if rows else []
        out[table] = sorted(rows, key=lambda r: tuple(str(r[k]) for k in keys))
    return out


def runner_on(
    archive: ArchiveTable, store: OnlineStore, root: Path, engine: BatchEngine | None, **cfg: Any
) -> BatchRunner:
    """A runner with its own control plane and day aggregates under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    return BatchRunner(
        archive,
        store,
        small_settings(**cfg),
        open_control_database(f"sqlite:///{root / 'control.db'}"),
        derived=DerivedStore(str(root / "derived")),
        engine=engine,
    )


def test_spark_and_duckdb_compute_the_same_day_tables_and_outputs(
    tmp_path: Path, spark_engine: BatchEngine
) -> None:
    archive = make_archive(tmp_path / "archive")
    archive.handle(records(history(1500, days=12)))
    # The defaults and features declared with other weights, baskets and windows: every
    # generator of kinds.py, both co-visitation sources (pair table and user-item rows).
    declared = (*default_batch_features(small_settings()), *parse_batch_features(DECLARED))
    namespaces = [USER_BATCH, *(f.name for f in declared if f.kind != "affinity")]
    results = {}
    for name, engine in (("duckdb", None), ("spark", spark_engine)):
        store = open_online_store(f"sqlite:///{tmp_path / name}.db")
        runner = runner_on(archive.table, store, tmp_path / name, engine, declared=declared)
        report = runner.run(until=UNTIL)
        results[name] = (report, online(store, namespaces), day_tables(runner.derived))
        store.close()
    (d_report, d_online, d_days), (s_report, s_online, s_days) = results["duckdb"], results["spark"]
    assert s_report.days_computed == d_report.days_computed
    assert s_report.events == d_report.events > 0
    assert s_report.outputs == d_report.outputs
    for table in DAY_TABLES:
        assert len(s_days[table]) == len(d_days[table]) > 0, table
        assert same(d_days[table], s_days[table], table) == []
    for ns in namespaces:
        assert len(d_online[ns]) > 0, ns
        assert same(d_online[ns], s_online[ns], ns) == []


def _victim_history() -> list[Signal]:
    days = [START + timedelta(days=d) for d in (1, 4, 9)]
    out = []
    for n, day in enumerate(days):
        out += [
            signal(50_000 + 10 * n, "view", VICTIM, "i-rare-a", day, minute=5),
            signal(50_001 + 10 * n, "view", VICTIM, "i-rare-b", day, minute=6),
            signal(50_002 + 10 * n, "purchase", VICTIM, "i000", day, minute=7, surface="ios"),
        ]
    return out


def test_an_erasure_recomputed_on_spark_passes_the_verification(
    tmp_path: Path, spark_engine: BatchEngine
) -> None:
    sent = history(800, days=10) + _victim_history()
    archive: ArchiveConsumer = make_archive(tmp_path / "a" / "archive")
    archive.handle(records(sent))
    store = open_online_store(f"sqlite:///{tmp_path / 'a' / 'online.db'}")
    runner = runner_on(archive.table, store, tmp_path / "a", spark_engine)
    runner.run(until=UNTIL)
    assert VICTIM in online(store, [USER_BATCH])[USER_BATCH]

    event = ErasureEvent(request_id="req-s", user_id=VICTIM, requested_at=datetime.now(UTC))
    archive.erase(event)
    (conf,) = BatchErasureParticipant(runner, archive.ledger).erase(event)

    assert conf.ok
    assert conf.rows_remaining == 0
    assert conf.rows_removed == 3 * 3 + 1  # 3 user-item rows a day on 3 days + the user row
    assert conf.evidence["partitions_recomputed"] == sorted(
        {s.timestamp.date().isoformat() for s in _victim_history()}
    )
    assert conf.evidence["verification"] == {
        "user_rows_in_derived_files": 0,
        "user_rows_in_online_store": 0,
        "rows_differing_from_recompute_without_user": {"item_pair_day": 0, "item_pop_day": 0},
    }
    # The oracle, on the other engine: DuckDB over an archive that never held the user.
    clean = make_archive(tmp_path / "b" / "archive")
    clean.handle(records(without_user(sent, VICTIM)))
    clean_store = open_online_store(f"sqlite:///{tmp_path / 'b' / 'online.db'}")
    runner_on(clean.table, clean_store, tmp_path / "b", None).run(until=UNTIL)
    namespaces = [USER_BATCH, ITEM_COVIS, ITEM_POP]
    after, expected = online(store, namespaces), online(clean_store, namespaces)
    assert same(expected, after) == []
    assert "i-rare-a" not in after[ITEM_COVIS]
    store.close()
    clean_store.close()


@pytest.fixture
def spark_master(tmp_path: Path) -> Iterator[str]:
    """A Spark standalone cluster on this machine (a master and a one-core worker, from
    the pyspark package's own jars): its ``spark://`` URL."""
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    env = {**os.environ, "SPARK_HOME": str(spark_home), "SPARK_NO_DAEMONIZE": "1"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"spark://127.0.0.1:{port}"
    spark_class = str(spark_home / "bin" / "spark-class")
    logs = tmp_path / "spark-logs"
    logs.mkdir()
    with (logs / "master.log").open("w") as master_log, (logs / "worker.log").open("w") as log:
        yield from _cluster(spark_class, env, port, url, logs, master_log, log, tmp_path)


def _cluster(
    spark_class: str,
    env: dict[str, str],
    port: int,
    url: str,
    logs: Path,
    master_log: Any,
    worker_log: Any,
    tmp_path: Path,
) -> Iterator[str]:
    master = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
         "--port", str(port), "--webui-port", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=master_log,
    )  # fmt: skip
    worker = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
         "--cores", "1", "--memory", "1g", "--webui-port", "0", "--work-dir", str(tmp_path / "w")],
        env=env, stdout=subprocess.DEVNULL, stderr=worker_log,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "Successfully registered with master" not in (logs / "worker.log").read_text():
            assert worker.poll() is None, "the Spark worker exited"
            assert master.poll() is None, "the Spark master exited"
            assert time.monotonic() < deadline, "the Spark worker did not register in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        for proc in (worker, master):
            proc.terminate()
            proc.wait(30)


@pytest.mark.timeout(600)  # a cluster, a JVM of its own and an executor to start
def test_cli_runs_the_batch_on_a_spark_standalone_master(
    tmp_path: Path, spark_master: str, spark_engine: BatchEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``headwater batch run --engine spark --spark-master spark://...`` (its own process:
    one Spark session per process) writes what ``--engine duckdb`` writes from a copy of
    the same deployment."""
    del spark_engine  # only for its rule: fail under CI=true when Spark cannot start
    for name in [n for n in os.environ if n.startswith("HEADWATER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HEADWATER_ARCHIVE_RETENTION", "0")
    monkeypatch.setenv("HEADWATER_BATCH_COVIS_MIN_SUPPORT", "1")
    homes = {"spark": tmp_path / "spark", "duckdb": tmp_path / "duckdb"}
    with Application(Settings.from_env(homes["spark"])) as app:
        app.open_archive_consumer().handle(records(history(400, days=3)))
    shutil.copytree(homes["spark"], homes["duckdb"])
    run = ["batch", "run", "--until", "2026-03-03", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "headwater", *run, "--home", str(homes["spark"]),
         "--engine", "spark", "--spark-master", spark_master],
        env=dict(os.environ), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["days_computed"] == [f"2026-03-0{d}" for d in (1, 2, 3)]
    out = CliRunner().invoke(
        batch_cli.app, [*run[1:], "--home", str(homes["duckdb"]), "--engine", "duckdb"]
    )
    assert out.exit_code == 0, out.output
    rows = {}
    for engine, home in homes.items():
        with Application(Settings.from_env(home)) as app:
            rows[engine] = online(app.open_online_store(), [USER_BATCH, ITEM_COVIS, ITEM_POP])
    assert all(len(r) > 0 for r in rows["duckdb"].values())
    assert same(rows["duckdb"], rows["spark"]) == []

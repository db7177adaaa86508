"""Choosing the batch engine, and what the Spark dialect does to the batch's SQL (no Spark
started here: ``test_batch_spark.py`` runs it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from headwater.batch import BatchSettings
from headwater.batch.engines import open_engine
from headwater.batch.engines.dialect import to_spark
from headwater.batch.engines.duckdb import DuckDBEngine
from headwater.batch.engines.spark import SparkEngine, shuffle_partitions, spark_memory
from headwater.batch.kinds import item_covis_sql
from headwater.config import Settings
from headwater.errors import ConfigurationError, MissingDependencyError


def test_the_engine_is_chosen_by_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEADWATER_BATCH_ENGINE", raising=False)
    monkeypatch.delenv("HEADWATER_SPARK_MASTER", raising=False)
    cfg = BatchSettings.from_env(Settings.from_env(tmp_path))
    assert (cfg.engine, cfg.spark_master) == ("duckdb", "local[2]")
    assert isinstance(open_engine(cfg), DuckDBEngine)
    monkeypatch.setenv("HEADWATER_BATCH_ENGINE", "Spark")
    monkeypatch.setenv("HEADWATER_SPARK_MASTER", "spark://sparky:7077")
    cfg = BatchSettings.from_env(Settings.from_env(tmp_path))
    assert (cfg.engine, cfg.spark_master) == ("spark", "spark://sparky:7077")
    assert isinstance(open_engine(cfg), SparkEngine)  # no session until first used
    monkeypatch.setenv("HEADWATER_BATCH_ENGINE", "flink")
    with pytest.raises(ConfigurationError, match="duckdb, spark"):
        BatchSettings.from_env(Settings.from_env(tmp_path))


def test_a_missing_pyspark_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(MissingDependencyError, match=r"headwater\[spark\]"):
        SparkEngine(BatchSettings(engine="spark")).session()


def test_spark_session_sizes() -> None:
    assert spark_memory("4GB") == "4g"
    assert spark_memory("512MiB") == "512m"
    with pytest.raises(ConfigurationError):
        spark_memory("lots")
    assert shuffle_partitions("local[2]") == 8
    assert shuffle_partitions("spark://h:7077") is None  # the cluster's own setting


def test_the_dialect_reads_files_as_views_inlines_users_and_keeps_list_order() -> None:
    seen: list[list[str]] = []

    def parquet(files: object) -> str:
        seen.append(list(files))  # type: ignore[call-overload]
        return "v0"

    sql = to_spark(
        "SELECT to_json(user_id)::VARCHAR FROM read_parquet(['/a/date=2026-03-01/p.parquet'], "
        "hive_partitioning = true, union_by_name = true) WHERE NOT list_contains($users, user_id)",
        parameters={"users": ["u1", "o'brien"]},
        parquet=parquet,
    ).sql("spark")
    assert seen == [["/a/date=2026-03-01/p.parquet"]]
    assert "FROM v0" in sql
    assert "read_parquet" not in sql.lower()
    assert "ARRAY('u1', 'o\\'brien')" in sql
    assert "TO_JSON(ARRAY(user_id))" in sql
    feature = BatchSettings().features()[4]
    covis = to_spark(
        item_covis_sql("pairs", feature, as_of="2026-03-13T00:00:00.000Z"), parquet=parquet
    )
    text = covis.sql("spark")
    # list(... ORDER BY s DESC, other): sorted by a comparator, not collect_list's order.
    assert "ARRAY_SORT(COLLECT_LIST(" in text
    assert "QUALIFY" not in text


def test_duckdb_connections_share_one_database_but_not_their_tables() -> None:
    engine = DuckDBEngine(BatchSettings(memory_limit="256MB"))
    with engine.connect() as con:
        con.execute("CREATE TEMP TABLE ev AS SELECT 1 AS x")
        assert con.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
        spill = Path(con.execute("SELECT current_setting('temp_directory')").fetchone()[0])
    database = engine._database
    with engine.connect() as con:
        # A run's temporary tables were its own: the next one starts clean.
        con.execute("CREATE TEMP TABLE ev AS SELECT 2 AS x")
        assert con.execute("SELECT x FROM ev").fetchall() == [(2,)]
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0].startswith("244")
    assert engine._database is database
    assert spill.is_dir()
    engine.close()
    assert not spill.exists()
    with engine.connect() as con:  # usable again after a close
        assert con.execute("SELECT 1").fetchone() == (1,)
    engine.close()

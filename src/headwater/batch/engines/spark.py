"""The scale-out engine: the batch's SQL, transpiled (``dialect.py``), on Spark.

One ``SparkSession`` per engine (started on first use: ~12 s), against
``HEADWATER_SPARK_MASTER`` (``local[N]`` or ``spark://host:port``). Spark reads the
archive's current files (the list comes from the Delta log through ``deltalake``, as
for DuckDB) and the day aggregates' files by path, so on a cluster those paths must be
on storage every worker sees. Query results come back to this process as Arrow and are
written by the same code as DuckDB's (``derived.py``, ``outputs.py``), so the outputs
land in the same place whichever engine computed them.

Spark allows one session per process: engines of one process (the scheduled run and
the erasure participant of ``headwater up``) share it through ``getOrCreate``, and the
batch lock keeps their runs, and so their temporary views, apart.

``pyspark`` is imported lazily: without it (``headwater[spark]``) the engine says which
extra to install.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa

from headwater.batch.settings import BatchSettings
from headwater.errors import ArchiveError, ConfigurationError, MissingDependencyError

__all__ = ["SparkConnection", "SparkEngine", "shuffle_partitions", "spark_memory"]

#: Settings that make Spark read and write what DuckDB does: UTC, ``date=`` directories
#: as text (not inferred dates), JSON that keeps null fields.
SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    "spark.sql.jsonGenerator.ignoreNullFields": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.parquet.mergeSchema": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}


def shuffle_partitions(master: str) -> int | None:
    """Shuffle partitions for a ``local[N]`` master (4 per core: Spark's 200 cost more in
    task overhead than they save on one machine); None: the cluster's own setting."""
    m = re.fullmatch(r"local\[(\d+)\]", master.strip())
    if m is not None:
        return 4 * int(m.group(1))
    return 8 if master.strip() == "local" else None


_views = itertools.count()


def spark_memory(limit: str) -> str:
    """DuckDB's ``4GB`` as Spark's ``4g`` (the driver's memory, where a local master's
    executors run too)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT])I?B?\s*", limit.upper())
    if m is None:
        raise ConfigurationError(f"not a memory size: {limit!r}")
    return f"{m.group(1)}{m.group(2).lower()}"


class _Rows:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


class _Query:
    def __init__(self, frame: Any) -> None:
        self.frame = frame

    def to_arrow_reader(self, rows: int) -> pa.RecordBatchReader:
        table = _plain(self.frame.toArrow())
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(rows))


def _plain(table: pa.Table) -> pa.Table:
    """Spark's large strings as plain strings: the files and rows DuckDB writes."""
    fields = [
        pa.field(f.name, pa.string(), f.nullable) if pa.types.is_large_string(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


class SparkConnection:
    """DuckDB's connection API (the part the batch uses) over a ``SparkSession``."""

    def __init__(self, spark: Any) -> None:
        self.spark = spark
        self._views: list[str] = []
        self._cached: dict[str, Any] = {}

    def _parquet(self, files: Sequence[str]) -> str:
        """A temporary view over ``files``, partitioned by their ``date=`` directories."""
        name = f"hw_parquet_{next(_views)}"
        reader = self.spark.read
        base = files[0].split("/date=")[0] if "/date=" in files[0] else None
        if base is not None:
            reader = reader.option("basePath", base)
        reader.parquet(*files).createOrReplaceTempView(name)
        self._views.append(name)
        return name

    def _tree(self, sql: str, parameters: Mapping[str, Any] | None) -> Any:
        from headwater.batch.engines.dialect import to_spark

        return to_spark(sql, parameters=parameters, parquet=self._parquet)

    def execute(self, sql: str, parameters: Mapping[str, Any] | None = None) -> _Rows:
        """Run one statement: ``CREATE [OR REPLACE] TEMP TABLE`` caches its rows under the
        name (computed on first use: the batch lock keeps its sources still meanwhile),
        ``DROP TABLE`` forgets them."""
        from sqlglot import exp

        tree = self._tree(sql, parameters)
        if isinstance(tree, exp.Create) and isinstance(tree.expression, exp.Query):
            name = tree.this.name
            frame = self.spark.sql(tree.expression.sql("spark")).persist()
            self._forget(name)
            frame.createOrReplaceTempView(name)
            self._cached[name] = frame
            return _Rows([])
        if isinstance(tree, exp.Drop):
            for table in tree.args.get("tables") or [tree.this]:
                self._forget(table.name)
            return _Rows([])
        return _Rows([tuple(r) for r in self.spark.sql(tree.sql("spark")).collect()])

    def sql(self, sql: str) -> _Query:
        """A query whose rows are read as Arrow batches."""
        return _Query(self.spark.sql(self._tree(sql, None).sql("spark")))

    def register(self, name: str, data: pa.Table) -> None:
        """An Arrow table as the view ``name``."""
        self.spark.createDataFrame(data).createOrReplaceTempView(name)
        self._views.append(name)

    def _forget(self, name: str) -> None:
        frame = self._cached.pop(name, None)
        if frame is not None:
            self.spark.catalog.dropTempView(name)
            frame.unpersist()

    def close(self) -> None:
        """Drop the views and cached tables this connection made."""
        for name in list(self._cached):
            self._forget(name)
        for name in self._views:
            self.spark.catalog.dropTempView(name)
        self._views.clear()


class SparkEngine:
    """The batch on Spark: one session, started on first use, stopped by ``close``."""

    name = "spark"

    def __init__(self, cfg: BatchSettings) -> None:
        self.cfg = cfg
        self._session: Any = None

    def session(self) -> Any:
        """The engine's ``SparkSession`` (started now if needed)."""
        if self._session is not None:
            return self._session
        try:
            import sqlglot  # noqa: F401  (the dialect's; checked here to name the extra)
            from pyspark.sql import SparkSession
        except ImportError as exc:
            module = (exc.name or "pyspark").split(".")[0]
            raise MissingDependencyError("spark batch engine", module, "spark") from None
        builder = (
            SparkSession.builder.master(self.cfg.spark_master)
            .appName("headwater-batch")
            .config("spark.driver.memory", spark_memory(self.cfg.memory_limit))
        )
        for key, value in SESSION_CONF.items():
            builder = builder.config(key, value)
        partitions = shuffle_partitions(self.cfg.spark_master)
        if partitions is not None:
            builder = builder.config("spark.sql.shuffle.partitions", str(partitions))
        try:
            self._session = builder.getOrCreate()
        except Exception as exc:  # no Java, an unreachable master: Spark's own errors
            raise ArchiveError(
                f"could not start Spark (master {self.cfg.spark_master}): {exc}"
            ) from exc
        return self._session

    @contextmanager
    def connect(self) -> Iterator[SparkConnection]:
        """A connection for one run; Spark's errors become ``ArchiveError``."""
        spark = self.session()
        from py4j.protocol import Py4JError
        from pyspark.errors import PySparkException

        con = SparkConnection(spark)
        try:
            yield con
        except (PySparkException, Py4JError) as exc:
            raise ArchiveError(f"batch query failed on Spark: {exc}") from exc
        finally:
            con.close()

    def close(self) -> None:
        """Stop the session (the JVM stays for the process: Spark's own rule)."""
        if self._session is not None:
            self._session.stop()
            self._session = None

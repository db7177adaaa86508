"""Point-in-time training sets: each label row with the features as they were at its time.

A label is ``(user_id, timestamp, [item_id], label columns...)``. Its streaming features
are computed by the streaming consumer's own compiled pass (``FeatureEngine.apply``)
over the user's archived signals whose event time is at or before the label's, in the
order the stream applied them (receive time, then event time, then event id: the
archive keeps no bus offset per row), with the consumer's lateness bound; each feature
is then read at the label's time, as the online store answers at that moment. The batch
features are those of the last batch run that completed before the label's time
(``batch.history``). Labels of erased users (a tombstone in the erasure ledger) are
left out.

One pass over the archive, in DuckDB: the label users' signals and the labels, sorted
by user, stream through once; a user's state moves forward from label to label (a
signal received before an already applied one but timestamped after the last label,
rare, makes the user's state be replayed from its first signal). Memory holds one
user's signals and a chunk of results, whatever the number of labels or signals.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from headwater.archive.table import ArchiveTable, quote_sql
from headwater.batch.history import BatchHistory
from headwater.erasure.tombstones import TombstoneFilter
from headwater.errors import ArchiveError, MissingDependencyError
from headwater.features.engine import FeatureEngine
from headwater.features.kinds import reader_for
from headwater.features.labels import LabelSource, ident, load_labels
from headwater.features.snapshots import by_user, user_snapshots

__all__ = ["HistoryReport", "TrainingSetBuilder"]
_CHUNK = 50_000  # rows per batch read from DuckDB
#: Result rows held before they go to the output: a row of the default features is
#: about 2.5 kB of JSON text, so 50,000 of them cost ~400 MB more peak memory than this.
_FLUSH = 8_192
_json = msgspec.json.Encoder()


#: The archive's columns a replay reads.
_ARCHIVE_COLUMNS = (
    "event_id",
    "event_type",
    "user_id",
    "item_id",
    "surface",
    "timestamp",
    "received_at",
    "payload",
)


@dataclass
class HistoryReport:
    """What one training set took: rows in and out, users, signals replayed, time."""

    labels: int = 0
    rows: int = 0
    users: int = 0
    erased_users: int = 0
    erased_labels: int = 0
    signals: int = 0
    replays: int = 0
    batch_runs: int = 0
    seconds: float = 0.0
    out: str | None = None
    features: list[str] = field(default_factory=list)


class TrainingSetBuilder:
    """Builds training sets from one archive, feature engine, erasure ledger and batch."""

    def __init__(
        self,
        archive: ArchiveTable,
        engine: FeatureEngine,
        tombstones: TombstoneFilter | None,
        batch: BatchHistory | None = None,
        *,
        memory_limit: str = "2GB",
        threads: int = 0,
    ) -> None:
        self.archive = archive
        self.engine = engine
        self.tombstones = tombstones
        self.batch = batch
        self.memory_limit = memory_limit
        self.threads = threads
        self.readers = [(s.name, reader_for(s)) for s in engine.specs]

    # -- entry points ------------------------------------------------------------

    def table(self, labels: LabelSource) -> pa.Table:
        """The training set as an Arrow table, sorted by user, then time, then the
        labels' order."""
        chunks: list[pa.Table] = []
        self.build(labels, chunks.append)
        return pa.concat_tables(chunks)

    def write(self, labels: LabelSource, out: str | Path) -> HistoryReport:
        """The training set written to a Parquet file (sorted as :meth:`table`); a file
        already there is replaced only once the whole training set is written."""
        began = time.perf_counter()
        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        writer: pq.ParquetWriter | None = None

        def sink(chunk: pa.Table) -> None:
            nonlocal writer
            if writer is None:
                writer = pq.ParquetWriter(partial, chunk.schema)
            writer.write_table(chunk)

        try:
            report = self.build(labels, sink)
        except BaseException:
            if writer is not None:
                writer.close()
            partial.unlink(missing_ok=True)
            raise
        if writer is not None:
            writer.close()
        partial.replace(target)
        report.out = str(target)
        report.seconds = round(time.perf_counter() - began, 3)
        return report

    def build(self, labels: LabelSource, sink: Callable[[pa.Table], None]) -> HistoryReport:
        """The training set, handed to ``sink`` in chunks (at least one, maybe empty)."""
        spill = Path(tempfile.mkdtemp(prefix="headwater-history-"))
        try:
            con = self.connect(spill)
        except BaseException:
            shutil.rmtree(spill, ignore_errors=True)
            raise
        import duckdb  # importable: connect() reported a missing DuckDB by its extra

        try:
            report = HistoryReport(features=[n for n, _ in self.readers])
            columns = load_labels(con, labels, report.features)
            report.labels = int(con.execute("SELECT count(*) FROM hw_labels").fetchall()[0][0])
            self.erased(con, report)
            self.batch_rows(con, report)
            self.replay(con, report, columns, sink)
            report.rows = report.labels - report.erased_labels
        except duckdb.Error as exc:
            raise ArchiveError(f"training set: a query over the archive failed: {exc}") from exc
        else:
            return report
        finally:
            con.close()
            shutil.rmtree(spill, ignore_errors=True)

    # -- the pass ----------------------------------------------------------------

    def connect(self, spill: Path) -> Any:
        """A DuckDB database of its own in ``spill``: UTC, bounded memory, spilling there."""
        try:
            import duckdb
        except ImportError:
            raise MissingDependencyError("training sets", "duckdb", "archive") from None
        con = duckdb.connect(str(spill / "work.duckdb"))
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = {quote_sql(self.memory_limit)}")
        con.execute(f"SET temp_directory = {quote_sql(str(spill))}")
        if self.threads:
            con.execute(f"SET threads = {int(self.threads)}")
        return con

    def archive_relation(self, con: Any) -> str:
        """A DuckDB relation over the archive's current rows."""
        return self.archive.relation(con, self.archive.days(), _ARCHIVE_COLUMNS)

    def replay(
        self,
        con: Any,
        report: HistoryReport,
        columns: Sequence[str],
        sink: Callable[[pa.Table], None],
    ) -> None:
        """Every label with its streaming features (and its batch columns) into ``sink``."""
        archive = self.archive_relation(con)
        con.execute(
            "CREATE TABLE hw_users AS SELECT user_id, max(__us) AS until FROM hw_labels "
            "WHERE NOT __erased GROUP BY user_id"
        )
        report.users = int(con.execute("SELECT count(*) FROM hw_users").fetchall()[0][0])
        sql = f"""
            SELECT a.user_id, 0 AS tag,
                   coalesce(epoch_us(a.received_at), epoch_us(a."timestamp")) AS arrival,
                   epoch_us(a."timestamp") AS ts_us, a.event_id, a.event_type, a.surface,
                   a.item_id, a.payload, NULL::BIGINT AS "row"
            FROM {archive} a JOIN hw_users u
              ON a.user_id = u.user_id AND epoch_us(a."timestamp") <= u.until
            UNION ALL
            SELECT user_id, 1, __us, __us, NULL, NULL, NULL, NULL, NULL, __row
            FROM hw_labels WHERE NOT __erased
            ORDER BY user_id, tag, arrival, ts_us, event_id, event_type, surface, item_id,
                     payload, "row"
        """
        # The labels' own columns and batch columns, in the order the labels come above
        # (user, time, position), read beside it: no wide row is ever sorted or joined.
        keep = ", ".join(f"l.{ident(c)}" for c in columns)
        label_sql = f"""
            SELECT {keep}, make_timestamp(l.__us)::TIMESTAMPTZ AS as_of, b.doc AS batch,
                   r.as_of::TIMESTAMPTZ AS batch_as_of, r.run_id AS batch_run, l.__row
            FROM hw_labels l LEFT JOIN hw_label_runs r USING (__row)
            LEFT JOIN hw_batch_rows b ON b.run_id = r.run_id AND b.user_id = l.user_id
            WHERE NOT l.__erased ORDER BY l.user_id, l.__us, l.__row"""
        side = con.cursor()
        try:
            feed = _RowFeed(side.sql(label_sql).to_arrow_reader(_FLUSH))
            rows: list[int] = []
            values: list[list[str]] = [[] for _ in self.readers]
            for _user, signals, times, labels in by_user(con.sql(sql).to_arrow_reader(_CHUNK)):
                report.signals += len(signals)
                for row, at, state, replayed in user_snapshots(self.engine, signals, times, labels):
                    report.replays += replayed
                    now = at // 1000
                    rows.append(row)
                    for column, (name, read) in zip(values, self.readers, strict=True):
                        column.append(_json.encode(read(state.get(name), now)).decode())
                if len(rows) >= _FLUSH:
                    sink(self._chunk(feed, rows, values))
                    rows, values = [], [[] for _ in self.readers]
            sink(self._chunk(feed, rows, values))
        finally:
            side.close()

    def _chunk(self, feed: _RowFeed, rows: list[int], values: list[list[str]]) -> pa.Table:
        """The labels' columns of ``rows`` with the features' values, the batch columns
        last."""
        labels = feed.take(len(rows))
        if labels.column("__row").to_pylist() != rows:
            raise RuntimeError("training set: the labels and the replay went out of step")
        names = labels.column_names[:-5]
        arrays = [labels.column(n) for n in names]
        arrays += [pa.array(v, pa.string()) for v in values]
        arrays += [labels.column(n) for n in labels.column_names[-5:-1]]
        features = [n for n, _ in self.readers]
        return pa.Table.from_arrays(arrays, names=[*names, *features, *labels.column_names[-5:-1]])

    def erased(self, con: Any, report: HistoryReport) -> None:
        """Mark the labels of erased users (``__erased``); count them."""
        found: list[str] = []
        tomb = self.tombstones
        if tomb is not None:
            tomb.refresh(force=True)
            if tomb.erased_at:
                reader = con.sql("SELECT DISTINCT user_id FROM hw_labels").to_arrow_reader(_CHUNK)
                for batch in reader:
                    found += [
                        u for u in batch.column(0).to_pylist() if tomb.hasher(u) in tomb.erased_at
                    ]
        con.register("hw_erased_users", pa.table({"user_id": pa.array(found, pa.string())}))
        con.execute(
            "UPDATE hw_labels SET __erased = true "
            "WHERE user_id IN (SELECT user_id FROM hw_erased_users)"
        )
        report.erased_users = len(found)
        report.erased_labels = int(
            con.execute("SELECT count(*) FROM hw_labels WHERE __erased").fetchall()[0][0]
        )

    def batch_rows(self, con: Any, report: HistoryReport) -> None:
        """Each label's last completed batch run (``hw_label_runs``) and the user rows of
        those runs (``hw_batch_rows``)."""
        con.execute("CREATE TABLE hw_batch_rows (run_id BIGINT, user_id VARCHAR, doc VARCHAR)")
        runs = self.batch.completed_runs() if self.batch is not None else []
        con.register(
            "hw_runs",
            pa.table(
                BatchHistory.runs_table(runs),
                schema=pa.schema(
                    [("run_id", pa.int64()), ("finished_us", pa.int64()), ("as_of", pa.string())]
                ),
            ),
        )
        # The run that finished last strictly before the label's time.
        con.execute(
            "CREATE TABLE hw_label_runs AS SELECT l.__row, l.user_id, r.run_id, r.as_of "
            "FROM (SELECT __row, user_id, __us FROM hw_labels WHERE NOT __erased) l "
            "ASOF LEFT JOIN hw_runs r ON l.__us > r.finished_us"
        )
        used = [
            int(r[0])
            for r in con.execute(
                "SELECT DISTINCT run_id FROM hw_label_runs WHERE run_id IS NOT NULL ORDER BY 1"
            ).fetchall()
        ]
        by_id = {r.id: r for r in runs}
        for run_id in used:
            assert self.batch is not None  # a run was found, so batch history was given
            users = f"(SELECT DISTINCT user_id FROM hw_label_runs WHERE run_id = {run_id})"
            sql = self.batch.user_rows_sql(con, by_id[run_id], users)
            con.execute(f"INSERT INTO hw_batch_rows SELECT {run_id}, user_id, doc FROM ({sql})")
        report.batch_runs = len(used)


class _RowFeed:
    """Rows of an Arrow stream taken a given number at a time."""

    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self.reader = reader
        self.pending: list[pa.RecordBatch] = []
        self.count = 0

    def take(self, n: int) -> pa.Table:
        """The next ``n`` rows."""
        while self.count < n:
            try:
                batch = self.reader.read_next_batch()
            except StopIteration:
                raise RuntimeError("training set: fewer labels than replayed") from None
            self.pending.append(batch)
            self.count += batch.num_rows
        table = pa.Table.from_batches(self.pending, schema=self.reader.schema)
        rest = table.slice(n)
        self.pending = rest.to_batches()
        self.count = rest.num_rows
        return table.slice(0, n)

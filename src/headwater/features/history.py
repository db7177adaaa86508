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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from headwater.archive.table import ArchiveTable, quote_sql
from headwater.batch.history import BatchHistory
from headwater.erasure.tombstones import TombstoneFilter
from headwater.errors import ConfigurationError, MissingDependencyError
from headwater.features.engine import FeatureEngine
from headwater.features.kinds import reader_for

__all__ = ["RESERVED_COLUMNS", "HistoryReport", "LabelSource", "TrainingSetBuilder"]

#: Labels: a Parquet, CSV or Arrow IPC file, an Arrow table or stream, or a pandas or
#: Polars DataFrame.
LabelSource: TypeAlias = str | Path | pa.Table | Any
#: Columns the training set adds beside the features (a label column may not use them).
RESERVED_COLUMNS = ("as_of", "batch", "batch_as_of", "batch_run")
_REQUIRED = ("user_id", "timestamp")
_CHUNK = 50_000  # rows per batch read from DuckDB
#: Result rows held before they go to the spill file: a row of the default features is
#: about 2.5 kB of JSON text, so 50,000 of them cost ~400 MB more peak memory than this.
_FLUSH = 8_192
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_json = msgspec.json.Encoder()
_decode_json = msgspec.json.Decoder(dict[str, Any]).decode


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


class ArchivedSignal:
    """An archived signal as the feature pass reads it: the payload, kept as JSON text in
    the archive, is decoded only when a feature reads it."""

    __slots__ = ("_payload", "event_id", "event_type", "item_id", "surface", "timestamp")

    def __init__(  # noqa: PLR0917 - built once per archived row: positional on the hot path
        self,
        event_id: str,
        event_type: str,
        surface: str,
        timestamp: datetime,
        item_id: str | None,
        payload: str | None,
    ) -> None:
        self.event_id = event_id
        self.event_type = event_type
        self.surface = surface
        self.timestamp = timestamp
        self.item_id = item_id
        self._payload: Any = payload

    @property
    def payload(self) -> dict[str, Any]:
        """The payload as a dict (decoded once)."""
        value = self._payload
        if isinstance(value, dict):
            return value
        decoded: dict[str, Any] = _decode_json(value) if value else {}
        self._payload = decoded
        return decoded


def _user_snapshots(
    engine: FeatureEngine,
    signals: list[ArchivedSignal],
    times: list[int],
    labels: list[tuple[int, int]],
) -> Iterator[tuple[int, int, dict[str, Any], bool]]:
    """``(row, time_us, state, replayed)`` for each label ``(row, time_us)`` of one user,
    in time order; ``signals`` are in the order the stream applied them, ``times``
    their event times (µs). The state holds exactly the signals timestamped at or
    before the label, applied in that order."""
    by_time = sorted(range(len(signals)), key=times.__getitem__)
    state: dict[str, Any] = {}
    newest = -1  # the last signal (in applied order) the state holds
    k = 0
    for row, at in labels:
        fresh: list[int] = []
        while k < len(by_time) and times[by_time[k]] <= at:
            fresh.append(by_time[k])
            k += 1
        replayed = False
        if fresh:
            fresh.sort()
            if fresh[0] > newest:
                engine.apply(state, [signals[i] for i in fresh])
            else:
                # A signal applied after one the state holds arrived first: the stream
                # applied it earlier, so the user is replayed from the start.
                state = {}
                engine.apply(state, [signals[i] for i in sorted(by_time[:k])])
                replayed = True
            newest = max(newest, fresh[-1])
        yield row, at, state, replayed


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
        """The training set as an Arrow table, in the labels' order."""
        with self._session(labels) as (con, report, query):
            del report
            return con.sql(query).to_arrow_table()

    def write(self, labels: LabelSource, out: str | Path) -> HistoryReport:
        """The training set written to a Parquet file, in the labels' order."""
        began = time.perf_counter()
        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._session(labels) as (con, report, query):
            con.execute(
                f"COPY ({query}) TO {quote_sql(str(target))} (FORMAT parquet, ROW_GROUP_SIZE 16384)"
            )
        report.out = str(target)
        report.seconds = round(time.perf_counter() - began, 3)
        return report

    # -- the pass ----------------------------------------------------------------

    def _session(self, labels: LabelSource) -> _Session:
        return _Session(self, labels)

    def connect(self, spill: Path) -> Any:
        """A DuckDB connection: UTC, bounded memory, spilling into ``spill``."""
        try:
            import duckdb
        except ImportError:
            raise MissingDependencyError("training sets", "duckdb", "archive") from None
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = {quote_sql(self.memory_limit)}")
        con.execute(f"SET temp_directory = {quote_sql(str(spill))}")
        if self.threads:
            con.execute(f"SET threads = {int(self.threads)}")
        return con

    def archive_relation(self, con: Any) -> str:
        """A DuckDB relation over the archive's current rows."""
        files = [f for day in self.archive.days().values() for f in day.files]
        if files and not self.archive.remote:
            listed = ", ".join(quote_sql(f) for f in files)
            return (
                f"read_parquet([{listed}], hive_partitioning = true, "
                f"hive_types = {{'date': VARCHAR}}, union_by_name = true)"
            )
        data = self.archive.read(
            [
                "event_id",
                "event_type",
                "user_id",
                "item_id",
                "surface",
                "timestamp",
                "received_at",
                "payload",
            ]
        )
        con.register("hw_archive_rows", data)
        return "hw_archive_rows"

    def replay(self, con: Any, report: HistoryReport, spill: Path) -> str:
        """Every label's streaming features into a Parquet file of ``spill``; its path."""
        archive = self.archive_relation(con)
        con.execute(
            "CREATE TEMP TABLE hw_users AS SELECT user_id, max(__us) AS until FROM hw_labels "
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
        path = spill / "stream-features.parquet"
        names = [name for name, _ in self.readers]
        schema = pa.schema(
            [pa.field("__row", pa.int64()), *(pa.field(n, pa.string()) for n in names)]
        )
        with pq.ParquetWriter(path, schema) as writer:
            out: list[list[Any]] = [[] for _ in range(len(names) + 1)]
            for user, signals, times, labels in _by_user(con.sql(sql).to_arrow_reader(_CHUNK)):
                del user
                report.signals += len(signals)
                for row, at, state, replayed in _user_snapshots(
                    self.engine, signals, times, labels
                ):
                    report.replays += replayed
                    now = at // 1000
                    out[0].append(row)
                    for column, (name, read) in zip(out[1:], self.readers, strict=True):
                        column.append(_json.encode(read(state.get(name), now)).decode())
                if len(out[0]) >= _FLUSH:
                    writer.write_table(pa.table(dict(zip(schema.names, out, strict=True))))
                    out = [[] for _ in out]
            writer.write_table(pa.table(dict(zip(schema.names, out, strict=True)), schema=schema))
        return str(path)

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
        con.execute("CREATE TEMP TABLE hw_batch_rows (run_id BIGINT, user_id VARCHAR, doc VARCHAR)")
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
            "CREATE TEMP TABLE hw_label_runs AS SELECT l.__row, l.user_id, r.run_id, r.as_of "
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


def _by_user(
    reader: Any,
) -> Iterator[tuple[str, list[ArchivedSignal], list[int], list[tuple[int, int]]]]:
    """The sorted stream of signals and labels, one user at a time."""
    user: str | None = None
    signals: list[ArchivedSignal] = []
    times: list[int] = []
    labels: list[tuple[int, int]] = []
    for batch in reader:
        cols = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        users, tags, _arrival, ats, ids, types, surfaces, items, payloads, rows = cols
        for i, u in enumerate(users):
            if u != user:
                if user is not None:
                    yield user, signals, times, labels
                user, signals, times, labels = u, [], [], []
            at = ats[i]
            if tags[i]:
                labels.append((rows[i], at))
            else:
                when = _EPOCH + timedelta(microseconds=at)
                signals.append(
                    ArchivedSignal(ids[i], types[i], surfaces[i], when, items[i], payloads[i])
                )
                times.append(at)
    if user is not None:
        yield user, signals, times, labels


class _Session:
    """One training set's DuckDB connection and spill directory, labels loaded and
    checked, the pass done; yields ``(connection, report, final query)``."""

    def __init__(self, builder: TrainingSetBuilder, labels: LabelSource) -> None:
        self.builder = builder
        self.labels = labels
        self.spill = Path(tempfile.mkdtemp(prefix="headwater-history-"))
        self.con: Any = None

    def __enter__(self) -> tuple[Any, HistoryReport, str]:
        b = self.builder
        try:
            self.con = con = b.connect(self.spill)
            report = HistoryReport(features=[n for n, _ in b.readers])
            columns = _load_labels(con, self.labels, report.features)
            report.labels = int(con.execute("SELECT count(*) FROM hw_labels").fetchall()[0][0])
            b.erased(con, report)
            stream = b.replay(con, report, self.spill)
            b.batch_rows(con, report)
            report.rows = report.labels - report.erased_labels
            keep = ", ".join(f"l.{_ident(c)}" for c in columns)
            feats = ", ".join(f"f.{_ident(n)}" for n in report.features)
            query = f"""
                SELECT {keep}, {feats}, make_timestamp(l.__us)::TIMESTAMPTZ AS as_of,
                       b.doc AS batch, r.as_of::TIMESTAMPTZ AS batch_as_of,
                       r.run_id AS batch_run
                FROM hw_labels l JOIN read_parquet({quote_sql(stream)}) f USING (__row)
                LEFT JOIN hw_label_runs r USING (__row)
                LEFT JOIN hw_batch_rows b ON b.run_id = r.run_id AND b.user_id = l.user_id
                WHERE NOT l.__erased ORDER BY l.__row"""
        except BaseException:
            self._close()
            raise
        return con, report, query

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None
        shutil.rmtree(self.spill, ignore_errors=True)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _label_relation(con: Any, labels: LabelSource) -> str:
    """A DuckDB relation over the labels, read in place when they are a file."""
    if isinstance(labels, str | Path):
        path = Path(labels)
        if not path.is_file():
            raise ConfigurationError(f"labels: no such file: {path}")
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            return f"read_parquet({quote_sql(str(path))})"
        if suffix == ".csv":
            return f"read_csv({quote_sql(str(path))}, header = true)"
        if suffix in (".arrow", ".feather", ".ipc"):
            from pyarrow import feather

            table = feather.read_table(str(path))
        else:
            raise ConfigurationError(
                f"labels: {path}: expected a .parquet, .csv or .arrow (IPC) file"
            )
    elif isinstance(labels, pa.Table):
        table = labels
    elif hasattr(labels, "to_arrow"):  # a Polars DataFrame
        table = labels.to_arrow()
    elif type(labels).__module__.startswith("pandas"):
        table = pa.Table.from_pandas(labels, preserve_index=False)
    elif hasattr(labels, "__arrow_c_stream__"):  # any Arrow stream (a RecordBatchReader...)
        table = pa.table(labels)
    else:
        raise ConfigurationError(
            f"labels: expected a file path, an Arrow table or a pandas or Polars DataFrame, "
            f"not {type(labels).__name__}"
        )
    con.register("hw_label_source", table)
    return "hw_label_source"


def _load_labels(con: Any, labels: LabelSource, features: Sequence[str]) -> Sequence[str]:
    """Load the labels into ``hw_labels`` (with ``__row``, ``__us``, ``__erased``); their
    own column names. Missing columns, columns named as the training set's own
    (``features`` and ``RESERVED_COLUMNS``), unreadable times and empty keys are refused,
    naming the columns or the rows."""
    import duckdb

    source = _label_relation(con, labels)
    try:
        columns = [str(r[0]) for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
    except duckdb.Error as exc:
        raise ConfigurationError(f"labels: cannot be read: {exc}") from None
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        raise ConfigurationError(
            f"labels: missing column(s) {', '.join(missing)} (have: {', '.join(columns)})"
        )
    clash = sorted(set(columns) & (set(RESERVED_COLUMNS) | set(features)))
    if clash:
        raise ConfigurationError(
            f"labels: column(s) {', '.join(clash)} would be replaced by the training set's own "
            f"columns ({', '.join([*features, *RESERVED_COLUMNS])}): rename them"
        )
    try:
        con.execute(
            f"CREATE TEMP TABLE hw_labels AS SELECT * REPLACE (user_id::VARCHAR AS user_id), "
            f"row_number() OVER () - 1 AS __row, "
            f'epoch_us("timestamp"::TIMESTAMPTZ) AS __us, false AS __erased FROM {source}'
        )
    except duckdb.Error as exc:
        raise ConfigurationError(
            f"labels: column timestamp: expected a time (a timestamp, or RFC 3339 text; "
            f"one without an offset is taken as UTC): {exc}"
        ) from None
    bad = con.execute(
        "SELECT __row, user_id IS NULL OR user_id = '' FROM hw_labels "
        "WHERE user_id IS NULL OR user_id = '' OR __us IS NULL ORDER BY __row LIMIT 5"
    ).fetchall()
    if bad:
        which = ", ".join(
            f"row {int(r[0])}: {'user_id is empty' if r[1] else 'timestamp is empty'}" for r in bad
        )
        raise ConfigurationError(f"labels: every row needs a user_id and a timestamp ({which})")
    return columns

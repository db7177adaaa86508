"""The labels of a training set: read from a file, an Arrow table or a DataFrame, checked.

Loaded into the DuckDB table ``hw_labels`` with three columns of their own: ``__row``
(the label's position), ``__us`` (its time, µs since the epoch) and ``__erased``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import pyarrow as pa

from headwater.archive.table import quote_sql
from headwater.errors import ConfigurationError

__all__ = ["RESERVED_COLUMNS", "LabelSource", "ident", "load_labels"]

#: Labels: a Parquet, CSV or Arrow IPC file, an Arrow table or stream, or a pandas or
#: Polars DataFrame.
LabelSource: TypeAlias = str | Path | pa.Table | Any
#: Columns the training set adds beside the features (a label column may not use them).
RESERVED_COLUMNS = ("as_of", "batch", "batch_as_of", "batch_run")
_REQUIRED = ("user_id", "timestamp")


def ident(name: str) -> str:
    """A quoted SQL identifier."""
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


def load_labels(con: Any, labels: LabelSource, features: Sequence[str]) -> Sequence[str]:
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
            f"CREATE TABLE hw_labels AS SELECT * REPLACE (user_id::VARCHAR AS user_id), "
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

"""The archive's row layout: one row per accepted signal, partitioned by event date (UTC).

Every canonical field is a column, the full payload is kept as JSON text, and the
payload fields the batch reads most (category, brand, price, quantity, rating) are
extracted into nullable columns so a nightly scan reads only narrow columns.

``records_to_arrow`` builds those columns from the bus's record bytes. Where headwater
was installed with a C compiler it reads them in compiled code (``_columns.pyx``) with no
Python object per signal; a batch that reader does not take, and every batch where it
is not built, goes through ``decode_signal`` and ``signals_to_arrow``, which give the
same table (a property test holds the two to it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from headwater.contract.signal import Signal, decode_signal

try:
    from headwater.archive._columns import (
        UnsupportedRecordError,
        distinct_strings,
        record_columns,
    )

    #: True when the compiled reader of records is built and importable.
    COMPILED = True
except ImportError:  # installed where no C compiler was found: msgspec and Python
    COMPILED = False

__all__ = [
    "ARCHIVE_SCHEMA",
    "COMPILED",
    "PARTITION_COLUMN",
    "STATS_COLUMNS",
    "SUBJECT_COLUMN",
    "TABLE_CONFIGURATION",
    "records_to_arrow",
    "signals_to_arrow",
]

PARTITION_COLUMN = "date"
SUBJECT_COLUMN = "subject"

_TS = pa.timestamp("us", tz="UTC")

#: The archive table's columns, in order.
ARCHIVE_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string()),
        pa.field("surface", pa.string(), nullable=False),
        pa.field("timestamp", _TS, nullable=False),
        pa.field("received_at", _TS),
        pa.field("producer", pa.string()),
        pa.field("schema_version", pa.int32()),
        pa.field("payload", pa.string()),
        pa.field("category", pa.string()),
        pa.field("brand", pa.string()),
        pa.field("price", pa.float64()),
        pa.field("quantity", pa.int32()),
        pa.field("rating", pa.float64()),
        pa.field(PARTITION_COLUMN, pa.string(), nullable=False),
        # The keyed hash of user_id (headwater.erasure.subject): an erasure deletes by it,
        # so the DELETE's predicate in the Delta log names no one. Null only in rows
        # written before the column existed; an erasure fills it for their days first.
        pa.field(SUBJECT_COLUMN, pa.string()),
    ]
)

#: Columns whose min/max go into the Delta log. ``user_id`` is left out on purpose: the
#: log outlives a DELETE until log cleanup, and must not name an erased user.
STATS_COLUMNS = ("event_type", "surface", "timestamp", "received_at")

#: Table properties set when the archive table is created.
TABLE_CONFIGURATION: dict[str, str | None] = {
    "delta.dataSkippingStatsColumns": ",".join(STATS_COLUMNS),
}

_json = msgspec.json.Encoder()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_US = 86_400 * 1_000_000


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**31:
        return None
    return value


def signals_to_arrow(signals: Iterable[Signal], subject: Callable[[str], str]) -> pa.Table:
    """Signals as an Arrow table in the archive's schema (``date`` from the UTC event time,
    ``subject`` the keyed hash of the user id)."""
    cols: dict[str, list[Any]] = {f.name: [] for f in ARCHIVE_SCHEMA}
    # One bound append per column, and the event date looked up per UTC day: this runs
    # for every accepted signal, on the core the gateway and the feature consumer share.
    event_id, event_type, user_id, item_id, surface = (
        cols[c].append for c in ("event_id", "event_type", "user_id", "item_id", "surface")
    )
    timestamp, received_at, producer, schema_version, payload = (
        cols[c].append
        for c in ("timestamp", "received_at", "producer", "schema_version", "payload")
    )
    category, brand, price, quantity, rating, date, subject_of = (
        cols[c].append
        for c in (
            "category",
            "brand",
            "price",
            "quantity",
            "rating",
            PARTITION_COLUMN,
            SUBJECT_COLUMN,
        )
    )
    dates: dict[int, str] = {}
    for s in signals:
        p = s.payload
        ts = _micros(s.timestamp)
        event_id(s.event_id)
        event_type(s.event_type)
        user_id(s.user_id)
        subject_of(subject(s.user_id))
        item_id(s.item_id)
        surface(s.surface)
        timestamp(ts)
        received_at(None if s.received_at is None else _micros(s.received_at))
        producer(s.producer)
        schema_version(s.schema_version)
        if p:
            payload(_json.encode(p).decode())
            category(_text(p.get("category")))
            brand(_text(p.get("brand")))
            price(_number(p.get("price")))
            quantity(_integer(p.get("quantity")))
            rating(_number(p.get("rating")))
        else:
            for empty in (payload, category, brand, price, quantity, rating):
                empty(None)
        day = ts // _DAY_US
        text = dates.get(day)
        if text is None:
            text = dates[day] = s.timestamp.astimezone(UTC).date().isoformat()
        date(text)
    arrays = [pa.array(cols[f.name], type=f.type) for f in ARCHIVE_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=ARCHIVE_SCHEMA)


def records_to_arrow(
    values: Sequence[bytes], subject: Callable[[str], str], *, compiled: bool = COMPILED
) -> pa.Table:
    """Encoded signals (the bus's record values) as an Arrow table in the archive's schema.

    A signal sent twice (the same ``event_id``) is one row, the first one. ``subject``
    is called once per distinct user. ``compiled=False`` takes the Python path.
    """
    if compiled and values:
        try:
            columns = record_columns(list(values))
        except UnsupportedRecordError:
            pass  # msgspec decodes this batch, and refuses a malformed record
        else:
            table = _from_columns(columns, len(values), subject)
            if table is not None:
                return table
    signals: dict[str, Signal] = {}
    for value in values:
        sig = decode_signal(value)
        signals.setdefault(sig.event_id, sig)
    return signals_to_arrow(signals.values(), subject)


def _from_columns(
    columns: list[tuple[bytes | None, bytes | None, bytes, int]],
    rows: int,
    subject: Callable[[str], str],
) -> pa.Table | None:
    """The table of ``record_columns``' buffers; None when a text is not valid UTF-8."""
    arrays = []
    # Every column but the last (``subject``), which is computed here.
    for f, (valid, offsets, values, nulls) in zip(ARCHIVE_SCHEMA, columns, strict=False):
        buffers = [None if valid is None else pa.py_buffer(valid)]
        if offsets is not None:
            buffers.append(pa.py_buffer(offsets))
        buffers.append(pa.py_buffer(values))
        arrays.append(pa.Array.from_buffers(f.type, rows, buffers, null_count=nulls))
    users = arrays[ARCHIVE_SCHEMA.get_field_index("user_id")]
    try:
        for array in arrays:
            array.validate(full=True)  # UTF-8 included, as msgspec checks it
    except pa.ArrowInvalid:
        return None
    encoded = users.dictionary_encode()
    subjects = pa.array([subject(u) for u in encoded.dictionary.to_pylist()], pa.string())
    arrays.append(subjects.take(encoded.indices))
    table = pa.Table.from_arrays(arrays, schema=ARCHIVE_SCHEMA)
    ids = table.column("event_id")
    # The usual batch (each id once) is told by the ids' hashes, without Arrow's table of
    # the ids; where two hashes meet, Arrow counts exactly.
    _, id_offsets, id_bytes, _ = columns[ARCHIVE_SCHEMA.get_field_index("event_id")]
    assert id_offsets is not None  # a string column
    if (
        not distinct_strings(id_offsets, id_bytes, rows)
        and pc.count_distinct(ids).as_py() < rows  # a resend within the batch: the first stays
    ):
        first = (
            pa.table({"id": ids, "row": pa.array(range(rows), pa.int64())})
            .group_by("id", use_threads=False)
            .aggregate([("row", "min")])
            .column("row_min")
        )
        table = table.take(pc.take(first, pc.sort_indices(first)))
    return table

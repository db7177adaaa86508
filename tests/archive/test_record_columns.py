"""The compiled reader of bus records gives the archive the table the Python path gives."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.archive.schema import COMPILED, records_to_arrow
from headwater.contract.signal import RECORD_FIELDS, Signal, encode_signal
from tests.archive._history import SUBJECT, history
from tests.conftest import IN_CI

if COMPILED:
    from headwater.archive._columns import distinct_strings, record_columns


@pytest.fixture(autouse=True)
def _built() -> None:
    """Skip where the compiled reader is not built; fail under CI, which builds it."""
    if not COMPILED:
        message = "headwater.archive._columns is not built here"
        if IN_CI:
            pytest.fail(f"{message}; CI requires it", pytrace=False)
        pytest.skip(message)


_text = st.text(max_size=12)
_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.sampled_from([math.inf, -math.inf, 1e16, 1.5e-5, -0.0, 5e-324])
    | _text
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_payload = st.dictionaries(
    st.sampled_from(["category", "brand", "price", "quantity", "rating", "query", "x"]) | _text,
    _json,
    max_size=6,
)
_times = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


@st.composite
def _signals(draw: st.DrawFn) -> Signal:
    return Signal(
        event_id=draw(st.sampled_from(["e1", "e2", "e3"]) | _text),
        event_type=draw(_text),
        user_id=draw(st.sampled_from(["u1", "u2"]) | _text),
        surface=draw(_text),
        timestamp=draw(_times),
        payload=draw(_payload),
        item_id=draw(st.none() | _text),
        producer=draw(_text),
        received_at=draw(st.none() | _times),
        schema_version=draw(st.integers(min_value=-(2**31), max_value=2**31 - 1)),
        request_id=draw(_text),
    )


def _same(compiled: pa.Table, python: pa.Table) -> None:
    assert compiled.schema == python.schema
    for name in python.column_names:
        left = compiled.column(name).to_pylist()
        right = python.column(name).to_pylist()
        if name in ("price", "rating"):  # NaN is never equal to itself
            left = ["nan" if v is not None and v != v else v for v in left]
            right = ["nan" if v is not None and v != v else v for v in right]
        assert left == right, name


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_signals(), st.booleans()), max_size=8))
def test_the_compiled_reader_gives_the_table_of_the_python_path(
    signals: list[tuple[Signal, bool]],
) -> None:
    # Records of both versions: a bus written by an earlier release holds maps.
    values = [encode_signal(s) if v2 else msgspec.msgpack.encode(s) for s, v2 in signals]
    record_columns(values)  # every signal headwater encodes is read in compiled code
    _same(
        records_to_arrow(values, SUBJECT, compiled=True),
        records_to_arrow(values, SUBJECT, compiled=False),
    )


def test_a_history_reads_the_same_both_ways_and_a_resend_counts_once() -> None:
    signals = history(2_000, days=5)
    values = [encode_signal(s) for s in signals]
    values.insert(100, values[7])  # sent again within the batch
    record_columns(values)
    compiled = records_to_arrow(values, SUBJECT, compiled=True)
    assert compiled.num_rows == 2_000
    _same(compiled, records_to_arrow(values, SUBJECT, compiled=False))


def _column(texts: list[bytes]) -> tuple[bytes, bytes]:
    """A string column's 32-bit offsets and bytes, as ``record_columns`` gives them."""
    array = pa.array(texts, pa.binary())
    _, offsets, data = array.buffers()
    assert offsets is not None
    assert data is not None
    return offsets.to_pybytes(), data.to_pybytes()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=6), max_size=40))
def test_distinct_strings_is_true_only_when_every_string_differs(texts: list[bytes]) -> None:
    assert distinct_strings(*_column(texts), len(texts)) == (len(set(texts)) == len(texts))


def test_distinct_strings_refuses_offsets_that_do_not_fit_the_bytes() -> None:
    offsets, data = _column([b"ab", b"cd"])
    with pytest.raises(ValueError, match="offsets"):
        distinct_strings(offsets[:8], data, 2)
    with pytest.raises(ValueError, match="beyond"):
        distinct_strings(offsets, data[:3], 2)


def test_a_batch_of_distinct_ids_is_not_counted_again_by_arrow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The usual batch (each id once) costs no Arrow hash table of its ids; a batch with
    a resend still gets the exact count, and keeps the first."""
    import headwater.archive.schema as schema

    counted: list[int] = []
    count_distinct = schema.pc.count_distinct

    def counting(ids: Any) -> Any:
        counted.append(len(ids))
        return count_distinct(ids)

    monkeypatch.setattr(schema.pc, "count_distinct", counting)
    values = [encode_signal(s) for s in history(500, days=2)]
    assert records_to_arrow(values, SUBJECT, compiled=True).num_rows == 500
    assert counted == []
    values.insert(10, values[3])
    table = records_to_arrow(values, SUBJECT, compiled=True)
    assert counted == [501]
    assert table.num_rows == 500
    assert table.column("event_id").to_pylist()[:11] == [
        s.event_id for s in history(500, days=2)[:11]
    ]


def _odd_records() -> list[tuple[str, bytes]]:
    good: dict[str, Any] = {
        "event_id": "e1",
        "event_type": "view",
        "user_id": "u1",
        "surface": "web",
        "timestamp": datetime(2026, 3, 1, tzinfo=UTC),
    }
    encode = msgspec.msgpack.encode
    return [
        ("a number where a string goes", encode({**good, "user_id": 7})),
        ("no timestamp", encode({k: v for k, v in good.items() if k != "timestamp"})),
        ("a timestamp as text", encode({**good, "timestamp": "2026-03-01T00:00:00Z"})),
        ("an unknown field", encode({**good, "added_later": [1]})),
        ("a payload with a date", encode({**good, "payload": {"at": good["timestamp"]}})),
        ("bytes in a payload", encode({**good, "payload": {"b": b"\x00"}})),
        ("a payload that is not a map", encode({**good, "payload": [1]})),
        ("invalid UTF-8", encode({**good, "user_id": "u1"}).replace(b"u1", b"\xff\xfe")),
        ("cut short", encode(good)[:-3]),
        ("an array record", encode_signal(Signal(**good))),
        ("an array record, required fields only", encode(list(good.values()))),
        ("an array record with a later field", encode([*_array(good), [1]])),
        ("an array record, its user a number", encode(_array({**good, "user_id": 7}))),
        ("an array record, no timestamp", encode(list(good.values())[:4])),
        ("an array record, timestamp as text", encode(_array({**good, "timestamp": "x"}))),
        ("an array record cut short", encode_signal(Signal(**good))[:-2]),
    ]


def _array(fields: dict[str, Any]) -> list[Any]:
    """A record of version 2 as a list: every field, in ``RECORD_FIELDS`` order."""
    full = {"payload": {}, "item_id": None, "producer": "", "received_at": None}
    full |= {"schema_version": 0, "request_id": "", **fields}
    return [full[name] for name in RECORD_FIELDS]


@pytest.mark.parametrize(("case", "value"), _odd_records(), ids=[c for c, _ in _odd_records()])
def test_a_record_the_compiled_reader_does_not_take_gets_msgspecs_reading(
    case: str, value: bytes
) -> None:
    del case
    batch = [encode_signal(history(1)[0]), value]
    try:
        python = records_to_arrow(batch, SUBJECT, compiled=False)
    except msgspec.DecodeError as exc:
        with pytest.raises(msgspec.DecodeError, match=re.escape(str(exc))):
            records_to_arrow(batch, SUBJECT, compiled=True)
    else:
        _same(records_to_arrow(batch, SUBJECT, compiled=True), python)

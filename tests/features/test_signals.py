"""The consumer's batch of signals in columns (``features.signals``): the compiled reader
of records and msgspec fill the same columns, records of either version (an array of
``RECORD_FIELDS``, or a map by field name as earlier releases wrote), and a record the
compiled reader does not take is read by msgspec, which refuses a malformed one with its
own error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

from headwater.bus.base import Record, RecordBatch
from headwater.bus.sqlite import DECODE_BATCH, ENCODE_BATCH
from headwater.contract.signal import RECORD_FIELDS, Signal, encode_signal
from headwater.features import signals
from headwater.features._pass import event_ms
from headwater.features.signals import COMPILED, SignalBatch, decode_batch

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
FIELDS = ("users", "starts", "event_ids", "types", "items", "surfaces", "times", "skipped")

needs_compiled = pytest.mark.skipif(not COMPILED, reason="the compiled reader is not built")

payloads = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def signal_records(draw: st.DrawFn) -> tuple[list[Record], dict[int, int]]:
    n = draw(st.integers(0, 60))
    records = []
    offsets = [0, 0, 0]
    for i in range(n):
        partition = draw(st.integers(0, 2))
        etype = draw(st.sampled_from(["view", "click", "rating", "purchase", "séarch"]))
        received = draw(st.sampled_from([None, NOW, NOW + timedelta(microseconds=1)]))
        sig = Signal(
            event_id=f"e{i}",
            event_type=etype,
            user_id=draw(st.sampled_from(["a", "b", "ü", "user-with-a-longer-id"])),
            surface=draw(st.sampled_from(["web", "ios", ""])),
            timestamp=NOW - timedelta(microseconds=draw(st.integers(-(10**12), 10**15))),
            payload=draw(st.dictionaries(st.text(max_size=6), payloads, max_size=4)),
            item_id=draw(st.sampled_from([None, "i1", "i2", "ítem"])),
            producer=draw(st.sampled_from(["", "web", "app"])),
            received_at=received,
            schema_version=draw(st.integers(0, 3)),
            request_id=draw(st.sampled_from(["", "r1", "r2"])),
        )
        # Records of both versions: a bus written by an earlier release holds maps.
        value = encode_signal(sig) if draw(st.booleans()) else msgspec.msgpack.encode(sig)
        records.append(Record(partition, offsets[partition], sig.user_id, "signal", value, i))
        offsets[partition] += 1
    stored = draw(st.dictionaries(st.integers(0, 3), st.integers(0, 10), max_size=3))
    return records, stored


def _columns(batch: SignalBatch) -> dict[str, Any]:
    out = {f: getattr(batch, f) for f in FIELDS}
    out["payloads"] = [msgspec.msgpack.decode(bytes(p)) for p in batch.payloads]
    out["last"] = {p: (r.offset, r.value) for p, r in batch.last.items()}
    out["runs"] = batch.runs
    return out


@needs_compiled
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(given=signal_records(), runs=st.booleans())
def test_the_compiled_reader_fills_the_columns_msgspec_fills(
    given: tuple[list[Record], dict[int, int]], runs: bool
) -> None:
    records, stored = given
    compiled = decode_batch(records, stored, runs=runs, compiled=True)
    python = decode_batch(records, stored, runs=runs, compiled=False)
    assert _columns(compiled) == _columns(python)


@needs_compiled
@pytest.mark.skipif(RecordBatch is None, reason="bus._batch is not built")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(given=signal_records(), runs=st.booleans(), per_stored=st.integers(1, 7))
def test_a_polls_records_read_in_place_fill_the_columns_their_records_fill(
    given: tuple[list[Record], dict[int, int]], runs: bool, per_stored: int
) -> None:
    """The SQLite bus's polls (``RecordBatch``: the stored batches' bytes read in place,
    no record made) give the columns the same records give as a list."""
    records, stored = given
    polled = RecordBatch(Record)
    for first in range(0, len(records), per_stored):
        polled.add(ENCODE_BATCH(records[first : first + per_stored]), 0, 10**6, DECODE_BATCH)
    in_place = decode_batch(polled, stored, runs=runs, compiled=True)
    assert _columns(in_place) == _columns(decode_batch(records, stored, runs=runs, compiled=True))
    assert _columns(in_place) == _columns(decode_batch(records, stored, runs=runs, compiled=False))
    assert in_place.last == decode_batch(records, stored, compiled=False).last


def test_the_columns_group_each_users_events_in_bus_order() -> None:
    sent = [
        Signal(event_id=f"e{i}", event_type="view", user_id=user, surface="web", timestamp=NOW)
        for i, user in enumerate(["a", "b", "a", "c", "b", "a"])
    ]
    records = [
        Record(i % 2, i // 2, s.user_id, "signal", encode_signal(s), 0) for i, s in enumerate(sent)
    ]
    for compiled in [True, False] if COMPILED else [False]:
        batch = decode_batch(records, {0: 1}, compiled=compiled)  # e0 applied before
        assert batch.skipped == 1
        assert batch.users == ["b", "a", "c"]
        starts = batch.starts
        assert [batch.event_ids[starts[k] : starts[k + 1]] for k in range(len(batch.users))] == [
            ["e1", "e4"],
            ["e2", "e5"],
            ["e3"],
        ]
        assert batch.times == [event_ms(NOW)] * 5
        assert {p: r.offset for p, r in batch.last.items()} == {0: 2, 1: 2}


@needs_compiled
def test_a_batch_of_thousands_of_users_is_grouped_as_msgspecs_reader_groups_it() -> None:
    """The compiled reader's table of users starts small and doubles as users come:
    across every growth, a user seen before is found again, so each user's events stay
    together in bus order, as the Python reader has them."""
    users = [f"user-{k}" for k in range(3_000)]
    sent = [
        Signal(
            event_id=f"e{i}",
            event_type=("view", "click")[i % 2],
            user_id=users[(i * 7_919) % len(users)],
            surface="web",
            timestamp=NOW - timedelta(seconds=i),
            item_id=f"i{i % 50}",
        )
        for i in range(9_000)
    ]
    records = [
        Record(i % 3, i // 3, s.user_id, "signal", encode_signal(s), 0) for i, s in enumerate(sent)
    ]
    compiled = decode_batch(records, {}, compiled=True)
    assert len(compiled.users) == len(users)
    assert _columns(compiled) == _columns(decode_batch(records, {}, compiled=False))


def test_a_publish_requests_runs_are_counted_once_for_the_batch() -> None:
    """A request's events lie in one run per partition, and another request's events can
    cut a run: each request is one entry, in the order the requests first appear."""
    later = NOW + timedelta(seconds=1)
    sent = [
        ("r1", NOW, "view", 0),
        ("r1", NOW, "click", 0),
        ("r2", later, "view", 0),  # cuts r1's run on partition 0
        ("r1", NOW, "view", 0),
        ("r1", NOW, "view", 1),  # r1's run on partition 1
        ("r2", later, "save", 1),
    ]
    records = [
        Record(
            partition,
            i,
            "a",
            "signal",
            encode_signal(
                Signal(
                    event_id=f"e{i}",
                    event_type=etype,
                    user_id="a",
                    surface="web",
                    timestamp=NOW,
                    producer="web",
                    received_at=at,
                    request_id=request,
                )
            ),
            0,
        )
        for i, (request, at, etype, partition) in enumerate(sent)
    ]
    for compiled in [True, False] if COMPILED else [False]:
        batch = decode_batch(records, {}, compiled=compiled)
        assert batch.runs == [
            ("web", NOW.timestamp(), "r1", {"view": 3, "click": 1}),
            ("web", later.timestamp(), "r2", {"view": 1, "save": 1}),
        ]


def _record(value: bytes) -> Record:
    return Record(0, 0, "a", "signal", value, 0)


def _fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "event_id": "e1",
        "event_type": "view",
        "user_id": "a",
        "surface": "web",
        "timestamp": NOW,
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


@needs_compiled
@pytest.mark.parametrize(
    ("value", "why"),
    [
        (msgspec.msgpack.encode(_fields(timestamp="2026-12-04T12:00:00Z")), "timestamp as text"),
        (msgspec.msgpack.encode(_fields(schema_version=1.0)), "an integer field holds a float"),
    ],
)
def test_a_record_the_compiled_reader_does_not_take_is_read_by_msgspec(
    value: bytes, why: str
) -> None:
    from headwater.features._records import UnsupportedRecordError, read_batch

    with pytest.raises(UnsupportedRecordError):
        read_batch([_record(value)], {}, True, SignalBatch())
    try:
        expected: Any = _columns(decode_batch([_record(value)], {}, compiled=False))
    except msgspec.ValidationError as error:
        expected = str(error)
    try:
        got: Any = _columns(decode_batch([_record(value)], {}, compiled=True))
    except msgspec.ValidationError as error:
        got = str(error)
    assert got == expected, why


def _repeated(field: str, value: Any) -> bytes:
    # A map that names ``field`` twice: the header counts one more pair, appended.
    encoded = msgspec.msgpack.encode(_fields())
    assert encoded[0] == 0x85
    return (
        bytes([0x86]) + encoded[1:] + msgspec.msgpack.encode(field) + msgspec.msgpack.encode(value)
    )


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(msgspec.msgpack.encode(_fields(user_id=None)), id="no user"),
        pytest.param(msgspec.msgpack.encode(_fields(item_id=7)), id="an item that is a number"),
        pytest.param(msgspec.msgpack.encode(_fields(surface=b"web")), id="a surface in bytes"),
        pytest.param(msgspec.msgpack.encode(_fields())[:-3], id="cut short"),
        pytest.param(msgspec.msgpack.encode(_fields()) + b"\x00", id="bytes after the record"),
        pytest.param(_repeated("user_id", 7), id="a second user id, a number"),
        pytest.param(
            msgspec.msgpack.encode(_fields()).replace(b"\xa1a", b"\xa1\xff"), id="not UTF-8"
        ),
    ],
)
@pytest.mark.parametrize("compiled", [True, False] if COMPILED else [False])
def test_a_malformed_record_gets_msgspecs_error_from_either_reader(
    value: bytes, compiled: bool
) -> None:
    good = encode_signal(
        Signal(event_id="e0", event_type="view", user_id="b", surface="web", timestamp=NOW)
    )
    with pytest.raises(msgspec.DecodeError) as caught:
        decode_batch([_record(good), _record(value)], {}, compiled=compiled)
    with pytest.raises(msgspec.DecodeError) as direct:
        signals.decode_stream_signal(value)
    assert str(caught.value) == str(direct.value)


def test_a_field_the_signal_does_not_have_is_skipped_by_both_readers() -> None:
    value = msgspec.msgpack.encode(
        _fields(extra={"nested": [1, 2.5, None, b"x"]}, payload={"q": 1})
    )
    batches = [
        decode_batch([_record(value)], {}, compiled=c)
        for c in ([True, False] if COMPILED else [False])
    ]
    assert all(_columns(b) == _columns(batches[0]) for b in batches)
    assert batches[0].event_ids == ["e1"]
    assert msgspec.msgpack.decode(bytes(batches[0].payloads[0])) == {"q": 1}


def test_a_record_value_in_another_buffer_is_read_by_msgspec() -> None:
    value = encode_signal(
        Signal(event_id="e0", event_type="view", user_id="b", surface="web", timestamp=NOW)
    )
    for compiled in [True, False] if COMPILED else [False]:
        batch = decode_batch(
            [Record(0, 0, "b", "signal", bytearray(value), 0)], {}, compiled=compiled
        )  # type: ignore[arg-type]
        assert batch.event_ids == ["e0"]


def test_records_given_one_at_a_time_are_held_while_the_batch_is_read() -> None:
    # A generator's records are dropped as it goes on; the reader keeps them alive
    # while it reads their bytes in place (users seen again, runs compared).
    def records() -> Any:
        for i in range(2_000):
            value = encode_signal(
                Signal(
                    event_id=f"e{i}",
                    event_type="view",
                    user_id=f"user-{i % 7}-" + "x" * 40,
                    surface="web",
                    timestamp=NOW,
                    request_id=f"r{i // 3}",
                    received_at=NOW,
                )
            )
            yield Record(0, i, "", "signal", value, 0)

    expected = _columns(decode_batch(list(records()), {}, compiled=False))
    for compiled in [True, False] if COMPILED else [False]:
        assert _columns(decode_batch(records(), {}, compiled=compiled)) == expected  # type: ignore[arg-type]


def _array(**changes: Any) -> list[Any]:
    """A record of version 2 as a list: ``_fields`` in ``RECORD_FIELDS`` order, every field."""
    full = {
        "payload": {},
        "item_id": None,
        "producer": "",
        "received_at": None,
        "schema_version": 0,
        "request_id": "",
        **_fields(),
    }
    full.update(changes)
    return [full[name] for name in RECORD_FIELDS]


@pytest.mark.parametrize(
    ("value", "read"),
    [
        pytest.param(_array(), True, id="every field"),
        pytest.param(_array()[:5], True, id="the required fields only"),
        pytest.param(_array()[:7], True, id="up to the item"),
        pytest.param([*_array(), "a field of a later version"], True, id="a field past the last"),
        pytest.param(_array(item_id="i1", received_at=NOW, request_id="r"), True, id="envelope"),
        pytest.param(_array()[:4], False, id="no timestamp"),
        pytest.param(_array(user_id=7), False, id="a user id that is a number"),
        pytest.param(_array(timestamp="2026-12-04T12:00:00Z"), True, id="a timestamp as text"),
        pytest.param(_array(timestamp=None), False, id="a timestamp that is nil"),
        pytest.param(_array(schema_version=1.5), False, id="a version that is a float"),
        pytest.param(_array(producer=None), False, id="a producer that is nil"),
    ],
)
@pytest.mark.parametrize("cut", [False, True], ids=["whole", "cut short"])
def test_a_record_of_version_2_is_read_as_msgspec_reads_it(
    value: list[Any], read: bool, cut: bool
) -> None:
    """Both readers give msgspec's columns for an array record, or its error."""
    encoded = msgspec.msgpack.encode(value)
    if cut:
        encoded = encoded[:-2]
    good = _record(
        encode_signal(
            Signal(event_id="e0", event_type="view", user_id="b", surface="web", timestamp=NOW)
        )
    )
    outcomes: list[Any] = []
    for compiled in [True, False] if COMPILED else [False]:
        try:
            batch = decode_batch([good, _record(encoded)], {}, compiled=compiled)
        except msgspec.DecodeError as error:
            outcomes.append(str(error))
        else:
            outcomes.append(_columns(batch))
    assert all(o == outcomes[0] for o in outcomes)
    if read and not cut:
        assert sorted(outcomes[0]["event_ids"]) == ["e0", "e1"]
    else:
        assert isinstance(outcomes[0], str)

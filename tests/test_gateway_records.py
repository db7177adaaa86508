"""The gateway's bus records: the compiled writer (``ingest/_records.pyx``) gives the bytes
msgspec gives for each event's fields as a tuple (the Python path), whatever the fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import given, settings

from headwater.bus.base import Message
from headwater.contract._compiled import TypedSignal
from headwater.contract.signal import RECORD_FIELDS, decode_signal, encode_record
from headwater.ingest import _records as compiled
from headwater.ingest import ingestor
from headwater.ingest.ingestor import _encode_records_py

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


class View(TypedSignal, tag="view", kw_only=True):
    surface: Any
    payload: Any
    item_id: Any = None


class Rating(TypedSignal, tag="rating", kw_only=True):
    surface: Any
    payload: Any
    item_id: Any = None


View.schema_version_of_type = 3
Rating.schema_version_of_type = 200

# Strings each side of MessagePack's string headers (fixstr < 32, str 8, str 16, str 32).
lengths = st.sampled_from([0, 1, 31, 32, 255, 256, 65_535, 65_536]) | st.integers(0, 40)
texts = st.text(max_size=40) | lengths.map(lambda n: "é" * (n // 2) + "x" * (n - n // 2))
offsets = st.sampled_from([None, UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5))])
# Each side of the timestamp extension's forms: 32 bits of seconds, 34 bits, and 96 bits
# (before 1970 or after 2514); with and without microseconds.
moments = st.one_of(
    st.integers(-(10**15), 10**15).map(lambda us: NOW + timedelta(microseconds=us)),
    st.sampled_from(
        [
            datetime(1970, 1, 1, tzinfo=UTC),
            datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
            datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC),
            datetime(2106, 2, 7, 6, 28, 16, tzinfo=UTC),
            datetime(2514, 5, 30, 1, 53, 3, 999_999, tzinfo=UTC),
            datetime(2514, 5, 30, 1, 53, 4, tzinfo=UTC),
            datetime(1, 1, 1, tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
            datetime(2000, 2, 29, 12, tzinfo=UTC),
            datetime(1900, 3, 1, tzinfo=UTC),
        ]
    ),
)
timestamps = st.builds(
    lambda moment, tz: moment.replace(tzinfo=tz),
    moments,
    offsets,
)
payloads = st.dictionaries(
    st.text(max_size=8),
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | texts,
    max_size=4,
)
events = st.builds(
    lambda cls, **fields: cls(**fields),
    st.sampled_from([View, Rating]),
    event_id=texts,
    user_id=texts,
    timestamp=timestamps,
    # A surface or item that is not a string is encoded by msgspec, as the Python path does.
    surface=texts | st.integers(0, 3),
    payload=payloads,
    item_id=st.none() | texts | st.integers(0, 3),
)


def _both(batch: list[TypedSignal], **envelope: Any) -> tuple[Any, Any]:
    """What each path gives: its messages and entries, or the error it raised."""
    out: list[Any] = []
    for encode in (compiled.encode_records, _encode_records_py):
        messages: list[Message] = []
        entries: list[tuple[str, str]] = []
        try:
            encode(batch, messages, entries, encode=encode_record, message=Message, **envelope)
        except (OverflowError, TypeError, ValueError) as exc:
            # A time msgspec cannot write (UTC before year 1): refused by both.
            out.append((type(exc), str(exc)))
        else:
            out.append((messages, entries))
    return out[0], out[1]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(events, max_size=6),
    texts,
    st.sampled_from([NOW, NOW.replace(tzinfo=None), datetime(2600, 1, 1, tzinfo=UTC)]),
    texts,
)
def test_the_compiled_records_are_the_python_paths_byte_for_byte(
    batch: list[TypedSignal], producer: str, received_at: datetime, request_id: str
) -> None:
    fast, slow = _both(batch, producer=producer, received_at=received_at, request_id=request_id)
    assert fast == slow
    messages, entries = fast
    if not isinstance(messages, list):
        return  # both refused the batch with the same error
    assert entries == [(e.event_id, e.user_id) for e in batch]
    assert [m.key for m in messages] == [e.user_id for e in batch]
    for event, message in zip(batch, messages, strict=True):
        fields = msgspec.msgpack.decode(message.value)
        assert len(fields) == len(RECORD_FIELDS)
        assert fields[0] == event.event_id
        assert fields[1] == type(event).__struct_config__.tag
        assert fields[9] == type(event).schema_version_of_type


def test_a_record_reads_back_as_the_signal_validated() -> None:
    event = View(
        event_id="e1",
        user_id="u1",
        timestamp=datetime(2026, 12, 7, 11, 59, 58, 123_456, tzinfo=UTC),
        surface="web",
        payload={"dwell_ms": 1200},
        item_id="i1",
    )
    (messages, entries), _ = _both([event], producer="web", received_at=NOW, request_id="r1")
    signal = decode_signal(messages[0].value)
    assert entries == [("e1", "u1")]
    assert (signal.event_id, signal.event_type, signal.user_id, signal.surface) == (
        "e1",
        "view",
        "u1",
        "web",
    )
    assert signal.timestamp == event.timestamp
    assert (signal.payload, signal.item_id, signal.producer) == ({"dwell_ms": 1200}, "i1", "web")
    assert (signal.received_at, signal.schema_version, signal.request_id) == (NOW, 3, "r1")


def test_a_payload_the_encoder_refuses_raises() -> None:
    bad = View(event_id="e2", user_id="u2", timestamp=NOW, surface="web", payload={"x": object()})
    good = View(event_id="e1", user_id="u1", timestamp=NOW, surface="web", payload={})
    for encode in (compiled.encode_records, _encode_records_py):
        messages: list[Message] = []
        entries: list[tuple[str, str]] = []
        with pytest.raises(TypeError, match="Encoding objects of type object is unsupported"):
            encode(
                [good, bad],
                messages,
                entries,
                producer="web",
                received_at=NOW,
                request_id="",
                encode=encode_record,
                message=Message,
            )


def test_the_gateway_writes_through_the_compiled_pass() -> None:
    assert ingestor._COMPILED_RECORDS
    assert ingestor.encode_records is compiled.encode_records

"""A signal's record on the bus: version 2 (an array of ``RECORD_FIELDS``) as the gateway
writes it, version 1 (a map by field name) as earlier releases wrote it; every reader
takes both."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import given, settings

from headwater.application import Application
from headwater.config import Settings
from headwater.contract.signal import (
    RECORD_FIELDS,
    Signal,
    decode_signal,
    decode_signals,
    encode_signal,
    event_id_of,
    is_array_record,
    record_decoder,
)
from headwater.errors import ConfigurationError

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
texts = st.text(max_size=12)

signals = st.builds(
    Signal,
    event_id=texts,
    event_type=texts,
    user_id=texts,
    surface=texts,
    timestamp=st.integers(-(10**15), 10**15).map(lambda us: NOW + timedelta(microseconds=us)),
    payload=st.dictionaries(
        texts, st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | texts, max_size=4
    ),
    item_id=st.none() | texts,
    producer=texts,
    received_at=st.none() | st.just(NOW),
    schema_version=st.integers(0, 2**31 - 1),
    request_id=texts,
)


@settings(max_examples=300, deadline=None)
@given(signals)
def test_a_signal_reads_back_from_a_record_of_either_version(signal: Signal) -> None:
    v2, v1 = encode_signal(signal), msgspec.msgpack.encode(signal)
    assert is_array_record(v2)
    assert not is_array_record(v1)
    assert decode_signal(v2) == signal
    assert decode_signal(v1) == signal
    assert event_id_of(v2) == event_id_of(v1) == signal.event_id
    assert decode_signals(msgspec.msgpack.encode([msgspec.Raw(v2), msgspec.Raw(v1)])) == [
        signal,
        signal,
    ]


def test_a_record_of_version_2_is_its_fields_in_order() -> None:
    signal = Signal(
        event_id="e1",
        event_type="view",
        user_id="u1",
        surface="web",
        timestamp=NOW,
        payload={"q": 1},
        item_id="i1",
        producer="web",
        received_at=NOW,
        schema_version=3,
        request_id="r1",
    )
    fields = msgspec.msgpack.decode(encode_signal(signal))
    assert len(fields) == len(RECORD_FIELDS) == 11
    assert dict(zip(RECORD_FIELDS, fields, strict=True)) == {
        "event_id": "e1",
        "event_type": "view",
        "user_id": "u1",
        "surface": "web",
        "timestamp": NOW,
        "payload": {"q": 1},
        "item_id": "i1",
        "producer": "web",
        "received_at": NOW,
        "schema_version": 3,
        "request_id": "r1",
    }
    # The field names are no longer in each record.
    assert len(encode_signal(signal)) < 0.6 * len(msgspec.msgpack.encode(signal))


def test_an_array_of_a_later_version_or_with_defaults_left_out_is_read() -> None:
    fields = ["e1", "view", "u1", "web", NOW]
    assert decode_signal(msgspec.msgpack.encode(fields)) == Signal(
        event_id="e1", event_type="view", user_id="u1", surface="web", timestamp=NOW
    )
    later = msgspec.msgpack.encode([*fields, {}, None, "", None, 0, "", "appended"])
    assert decode_signal(later).event_id == event_id_of(later) == "e1"
    with pytest.raises(msgspec.ValidationError):
        decode_signal(msgspec.msgpack.encode(fields[:4]))


def test_a_struct_without_the_records_fields_in_their_order_is_refused() -> None:
    class Reordered(msgspec.Struct):
        user_id: str
        event_id: str

    with pytest.raises(TypeError, match="fields in their order"):
        record_decoder(Reordered)


@pytest.mark.parametrize("version", [2, 1])
def test_the_gateway_writes_records_of_the_version_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    """Version 2 by default; 1 (maps, as earlier releases wrote) while consumers of such a
    release still read the bus. Either reads back to the same signal."""
    if version == 1:
        monkeypatch.setenv("HEADWATER_BUS_RECORD_VERSION", "1")
    app = Application(Settings.from_env(tmp_path / "hw"))
    try:
        app.register_shipped_contracts()
        _, key = app.keys.create("web")
        event = {
            "event_id": "e1",
            "event_type": "view",
            "user_id": "u1",
            "item_id": "i1",
            "surface": "web",
            "timestamp": NOW.isoformat(),
            "payload": {},
        }
        outcome = app.ingestor.ingest(msgspec.json.encode([event]), key, request_id="req-1")
        assert outcome.accepted == 1
        consumer = app.bus.consumer(f"check-{time.time_ns()}")
        (record,) = consumer.poll(10, 1.0)
        consumer.close()
        assert is_array_record(record.value) == (version == 2)
        signal = decode_signal(record.value)
        assert (signal.event_id, signal.event_type, signal.user_id, signal.item_id) == (
            "e1",
            "view",
            "u1",
            "i1",
        )
        assert (signal.producer, signal.request_id, signal.timestamp) == ("web", "req-1", NOW)
        assert signal.received_at is not None
        assert signal.schema_version >= 1
        if version == 2:
            assert record.value == encode_signal(signal)
        else:  # a map by field name, as the gateway of an earlier release wrote it
            assert msgspec.msgpack.decode(record.value)["user_id"] == "u1"
    finally:
        app.close()


@pytest.mark.parametrize("raw", ["3", "0", "two", "2.0"])
def test_a_record_version_other_than_1_or_2_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("HEADWATER_BUS_RECORD_VERSION", raw)
    with pytest.raises(ConfigurationError, match="HEADWATER_BUS_RECORD_VERSION must be 1 or 2"):
        Settings.from_env(tmp_path / "hw")

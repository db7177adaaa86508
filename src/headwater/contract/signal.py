"""The canonical signal: the one shape every producer publishes and every consumer reads."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

__all__ = [
    "ENVELOPE_FIELDS",
    "SIGNAL_FIELDS",
    "Signal",
    "decode_signal",
    "decode_signals",
    "encode_signal",
    "event_id_of",
    "make_signal",
    "utcnow",
]

#: Fields a producer sets.
SIGNAL_FIELDS: tuple[str, ...] = (
    "event_id",
    "event_type",
    "user_id",
    "item_id",
    "surface",
    "timestamp",
    "payload",
)
#: Fields headwater sets on acceptance; a producer that sends one is rejected.
ENVELOPE_FIELDS: tuple[str, ...] = ("producer", "received_at", "schema_version", "request_id")


class Signal(msgspec.Struct, frozen=True, omit_defaults=True):
    """One user interaction signal, as consumers read it from the bus.

    ``timestamp`` and ``received_at`` are timezone-aware UTC. ``item_id`` is None
    only for event types that declare no item. ``producer``, ``received_at``,
    ``schema_version`` and ``request_id`` (the publish request that carried it, which
    connects the gateway's and the consumers' logs) form the envelope headwater sets
    when it accepts the signal.
    """

    event_id: str
    event_type: str
    user_id: str
    surface: str
    timestamp: datetime
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    item_id: str | None = None
    producer: str = ""
    received_at: datetime | None = None
    schema_version: int = 0
    request_id: str = ""


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Signal)


class _EventId(msgspec.Struct):
    event_id: str


_EVENT_ID = msgspec.msgpack.Decoder(_EventId)


def event_id_of(data: bytes) -> str:
    """The event id of an encoded signal, without decoding the rest of it."""
    return _EVENT_ID.decode(data).event_id


_LIST_DECODER = msgspec.msgpack.Decoder(list[Signal])


#: Bytes of a signal as the bus carries it (MessagePack, field names as keys). The
#: encoder's own method: the gateway calls it once per event, without a Python frame.
encode_signal: Callable[[Any], bytes] = _ENCODER.encode


def decode_signal(data: bytes) -> Signal:
    """A signal from the bytes the bus carries."""
    return _DECODER.decode(data)


def decode_signals(data: bytes) -> list[Signal]:
    """Signals from an encoded list (used for compact batch records)."""
    return _LIST_DECODER.decode(data)


def make_signal(
    *,
    event_id: str,
    event_type: str,
    user_id: str,
    surface: str,
    timestamp: datetime,
    item_id: str | None = None,
    payload: dict[str, Any] | None = None,
) -> Signal:
    """A signal built in Python, its timestamp converted to UTC (naive times are refused)."""
    if timestamp.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware (RFC 3339 with an offset)")
    return Signal(
        event_id=event_id,
        event_type=event_type,
        user_id=user_id,
        surface=surface,
        timestamp=timestamp.astimezone(UTC),
        payload=payload or {},
        item_id=item_id,
    )


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)

"""The canonical signal: the one shape every producer publishes and every consumer reads."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

__all__ = [
    "ENVELOPE_FIELDS",
    "RECORD_FIELDS",
    "SIGNAL_FIELDS",
    "Signal",
    "decode_signal",
    "decode_signals",
    "defstruct_fields",
    "encode_map_record",
    "encode_record",
    "encode_signal",
    "event_id_of",
    "is_array_record",
    "make_signal",
    "record_decoder",
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


#: The fields of a signal record on the bus, in the order its MessagePack array holds
#: them (``Signal``'s order). A record of version 2 (the gateway's since 2026-12-07) is
#: that array: every field, in this order, ``item_id`` and ``received_at`` nil when
#: absent. A record of version 1 is a map keyed by field name (the earlier gateway's,
#: which leaves out fields at their defaults); every reader takes both, told apart by the
#: first byte. An array longer than this is read as far as this list goes (fields a later
#: version appends are left); shorter, its missing trailing fields take their defaults.
RECORD_FIELDS: tuple[str, ...] = (
    "event_id",
    "event_type",
    "user_id",
    "surface",
    "timestamp",
    "payload",
    "item_id",
    "producer",
    "received_at",
    "schema_version",
    "request_id",
)

_ENCODER = msgspec.msgpack.Encoder()

#: Bytes of a record from its fields as a tuple in ``RECORD_FIELDS`` order: the
#: encoder's own method, which the gateway calls once per event without a Python frame.
encode_record: Callable[[tuple[Any, ...]], bytes] = _ENCODER.encode

#: Bytes of a record of version 1 (a map by field name) from a struct of the signal's
#: fields: what releases before version 2 wrote, and what ``HEADWATER_BUS_RECORD_VERSION=1``
#: keeps writing while consumers of such a release still read the bus.
encode_map_record: Callable[[Any], bytes] = _ENCODER.encode

S = TypeVar("S", bound=msgspec.Struct)


def is_array_record(data: bytes) -> bool:
    """True for a record of version 2 (a MessagePack array), False for version 1 (a map)."""
    if not data:
        return False
    head = data[0]
    return 0x90 <= head <= 0x9F or head in (0xDC, 0xDD)


def defstruct_fields(struct: type[msgspec.Struct]) -> list[Any]:
    """``struct``'s fields as ``msgspec.defstruct`` takes them: ``(name, type)``, or
    ``(name, type, default)`` for a field that has one."""
    fields: list[Any] = []
    for f in msgspec.structs.fields(struct):
        if f.required:
            fields.append((f.name, f.type))
        elif f.default_factory is not msgspec.NODEFAULT:
            fields.append((f.name, f.type, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, f.type, f.default))
    return fields


def record_decoder(struct: type[S]) -> Callable[[bytes], S]:
    """A decoder into ``struct`` of a record of either version. ``struct`` has the fields
    of ``Signal`` in its order (their types may differ: a payload left encoded); a record
    of version 2 is read into its twin as an array, then made a ``struct``."""
    fields = defstruct_fields(struct)
    if tuple(name for name, *_ in fields) != RECORD_FIELDS:
        raise TypeError(f"{struct.__name__} does not have a record's fields in their order")
    twin = msgspec.defstruct(
        f"{struct.__name__}Record",
        fields,
        array_like=True,
        frozen=True,
        gc=False,
        module=struct.__module__,
    )
    as_map = msgspec.msgpack.Decoder(struct).decode
    as_array = msgspec.msgpack.Decoder(twin).decode
    astuple = msgspec.structs.astuple

    def decode(data: bytes) -> S:
        if is_array_record(data):
            return struct(*astuple(as_array(data)))
        return as_map(data)

    return decode


class _EventId(msgspec.Struct):
    event_id: str


class _EventIdRecord(msgspec.Struct, array_like=True):
    event_id: str


_EVENT_ID = msgspec.msgpack.Decoder(_EventId).decode
_EVENT_ID_RECORD = msgspec.msgpack.Decoder(_EventIdRecord).decode


def event_id_of(data: bytes) -> str:
    """The event id of an encoded signal, without decoding the rest of it."""
    if is_array_record(data):
        return _EVENT_ID_RECORD(data).event_id
    return _EVENT_ID(data).event_id


#: A signal from the bytes the bus carries (a record of either version).
decode_signal: Callable[[bytes], Signal] = record_decoder(Signal)

_LIST_DECODER = msgspec.msgpack.Decoder(list[msgspec.Raw])


def decode_signals(data: bytes) -> list[Signal]:
    """Signals from an encoded list of records."""
    return [decode_signal(bytes(raw)) for raw in _LIST_DECODER.decode(data)]


def encode_signal(signal: Any) -> bytes:
    """A record of version 2 (the bytes the bus carries) from a ``Signal``, or from a
    validated event (its type's struct, its envelope unset until the gateway sets it)."""
    if isinstance(signal, Signal):
        event_type = signal.event_type
    else:
        event_type = type(signal).__struct_config__.tag
    return encode_record(
        (
            signal.event_id,
            event_type,
            signal.user_id,
            signal.surface,
            signal.timestamp,
            signal.payload,
            signal.item_id,
            _or(signal.producer, ""),
            _or(signal.received_at, None),
            _or(signal.schema_version, 0),
            _or(signal.request_id, ""),
        )
    )


def _or(value: Any, default: Any) -> Any:
    return default if value is msgspec.UNSET else value


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

"""The contract validator: one result per event, each rejection naming field and rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from headwater.contract.definition import RegisteredEventType
from headwater.contract.validator import Limits, SignalValidator
from headwater.errors import BatchTooLargeError, MalformedBatchError


def view(now: datetime, **over: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "e-1",
        "event_type": "view",
        "user_id": "u-1",
        "item_id": "i-1",
        "surface": "web",
        "timestamp": now.isoformat(),
        "payload": {"dwell_ms": 1200, "page": "product"},
    }
    event.update(over)
    return event


def test_valid_batch_is_accepted_in_order(validator: SignalValidator, now: datetime) -> None:
    events = [view(now, event_id=f"e-{i}") for i in range(10)]
    result = validator.validate_events(events)
    assert result.all_accepted
    assert [e.event_id for e in result.accepted] == [f"e-{i}" for i in range(10)]
    assert result.accepted_indices == list(range(10))


def test_signals_are_canonical_and_utc(validator: SignalValidator) -> None:
    local = datetime.now(timezone(timedelta(hours=5, minutes=30)))
    result = validator.validate_events([view(local)])
    (signal,) = result.signals()
    assert signal.timestamp.tzinfo is UTC
    assert signal.timestamp == local
    assert signal.payload == {"dwell_ms": 1200, "page": "product"}
    assert signal.item_id == "i-1"


MUTATIONS: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown type", {"event_type": "viewed"}, "event_type", "unknown_event_type"),
    ("surface", {"surface": "smart_tv"}, "surface", "surface_not_allowed"),
    ("undeclared", {"payload": {"colour": "red"}}, "payload.colour", "undeclared_payload_field"),
    ("wrong type", {"payload": {"dwell_ms": "long"}}, "payload.dwell_ms", "wrong_type"),
    ("float for int", {"payload": {"dwell_ms": 1.5}}, "payload.dwell_ms", "wrong_type"),
    ("bool for int", {"payload": {"dwell_ms": True}}, "payload.dwell_ms", "wrong_type"),
    ("negative", {"payload": {"dwell_ms": -1}}, "payload.dwell_ms", "out_of_bounds"),
    ("enum", {"payload": {"page": "moon"}}, "payload.page", "invalid_enum_value"),
    ("string too long", {"payload": {"referrer": "x" * 513}}, "payload.referrer", "out_of_bounds"),
    ("empty id", {"user_id": ""}, "user_id", "out_of_bounds"),
    ("long id", {"event_id": "e" * 129}, "event_id", "out_of_bounds"),
    ("id type", {"user_id": 42}, "user_id", "wrong_type"),
    ("no offset", {"timestamp": "2026-11-25T10:00:00"}, "timestamp", "timestamp_without_offset"),
    ("bad time", {"timestamp": "yesterday"}, "timestamp", "invalid_timestamp"),
    ("time type", {"timestamp": 1700000000}, "timestamp", "wrong_type"),
    ("envelope", {"producer": "web"}, "producer", "envelope_field_set"),
    ("envelope version", {"schema_version": 3}, "schema_version", "envelope_field_set"),
    ("unknown top", {"session": "s"}, "session", "unknown_field"),
    ("no item", {"item_id": None}, "item_id", "item_required"),
    ("payload type", {"payload": []}, "payload", "wrong_type"),
]


@pytest.mark.parametrize(
    ("label", "change", "field", "rule"), MUTATIONS, ids=[m[0] for m in MUTATIONS]
)
def test_each_mutation_is_rejected_with_its_reason(
    validator: SignalValidator,
    now: datetime,
    label: str,
    change: dict[str, Any],
    field: str,
    rule: str,
) -> None:
    good = view(now, event_id="good")
    bad = view(now, event_id="bad") | change
    result = validator.validate_events([good, bad, good | {"event_id": "good-2"}])
    assert [e.event_id for e in result.accepted] == ["good", "good-2"]
    assert result.accepted_indices == [0, 2]
    (rej,) = result.rejections
    assert (rej.index, rej.event_id) == (1, change.get("event_id", "bad"))
    assert (rej.field, rej.rule) == (field, rule), rej


@pytest.mark.parametrize(
    ("missing", "rule"),
    [
        ("event_id", "missing_required_field"),
        ("event_type", "missing_required_field"),
        ("user_id", "missing_required_field"),
        ("surface", "missing_required_field"),
        ("timestamp", "missing_required_field"),
        ("payload", "missing_required_field"),
        ("item_id", "item_required"),
    ],
)
def test_missing_fields(validator: SignalValidator, now: datetime, missing: str, rule: str) -> None:
    event = view(now)
    del event[missing]
    (rej,) = validator.validate_events([event]).rejections
    assert (rej.field, rej.rule) == (missing, rule)


def test_required_payload_field(validator: SignalValidator, now: datetime) -> None:
    event = view(now, event_type="rating", surface="reviews", payload={"text": "ok"})
    (rej,) = validator.validate_events([event]).rejections
    assert (rej.field, rej.rule) == ("payload.rating", "missing_required_field")


def test_rating_bounds(validator: SignalValidator, now: datetime) -> None:
    events = [
        view(now, event_id=f"r{r}", event_type="rating", surface="reviews", payload={"rating": r})
        for r in range(7)
    ]
    result = validator.validate_events(events)
    assert [e.event_id for e in result.accepted] == ["r1", "r2", "r3", "r4", "r5"]
    assert {r.event_id: r.rule for r in result.rejections} == {
        "r0": "out_of_bounds",
        "r6": "out_of_bounds",
    }


def test_list_fields(validator: SignalValidator, now: datetime) -> None:
    base = view(now, event_type="rating", surface="reviews")
    ok = base | {"event_id": "ok", "payload": {"rating": 4, "tags": ["price", "fit"]}}
    bad_item = base | {"event_id": "x", "payload": {"rating": 4, "tags": ["price", "colour"]}}
    too_many = base | {"event_id": "y", "payload": {"rating": 4, "tags": ["price"] * 6}}
    result = validator.validate_events([ok, bad_item, too_many])
    assert [e.event_id for e in result.accepted] == ["ok"]
    rules = {r.event_id: (r.field, r.rule) for r in result.rejections}
    assert rules == {
        "x": ("payload.tags[1]", "invalid_enum_value"),
        "y": ("payload.tags", "out_of_bounds"),
    }


def test_itemless_type(validator: SignalValidator, now: datetime) -> None:
    search = view(now, event_type="search", payload={"query": "boots"})
    del search["item_id"]
    with_null = search | {"event_id": "n", "item_id": None}
    with_item = search | {"event_id": "w", "item_id": "i-9"}
    result = validator.validate_events([search, with_null, with_item])
    assert [e.event_id for e in result.accepted] == ["e-1", "n"]
    assert result.signals()[0].item_id is None
    (rej,) = result.rejections
    assert (rej.event_id, rej.field, rej.rule) == ("w", "item_id", "item_not_allowed")


def test_time_horizon(validator: SignalValidator, now: datetime) -> None:
    old = view(now - timedelta(days=7, minutes=1), event_id="old")
    edge = view(now - timedelta(days=6, hours=23), event_id="edge")
    future = view(now + timedelta(minutes=6), event_id="future")
    soon = view(now + timedelta(minutes=4), event_id="soon")
    result = validator.validate_events([old, edge, future, soon], now=now)
    assert [e.event_id for e in result.accepted] == ["edge", "soon"]
    assert {r.event_id: r.rule for r in result.rejections} == {
        "old": "timestamp_too_old",
        "future": "timestamp_in_future",
    }


def test_configurable_horizon(default_registered: Any, now: datetime) -> None:
    strict = SignalValidator(default_registered, Limits(horizon=timedelta(hours=1)))
    result = strict.validate_events([view(now - timedelta(hours=2))], now=now)
    assert result.rejections[0].rule == "timestamp_too_old"


def test_all_problems_are_listed(validator: SignalValidator, now: datetime) -> None:
    bad = view(now, user_id="", surface="tv", payload={"dwell_ms": -5, "x": 1})
    (rej,) = validator.validate_events([bad]).rejections
    assert {(v.field, v.rule) for v in rej.violations} == {
        ("user_id", "out_of_bounds"),
        ("surface", "surface_not_allowed"),
        ("payload.x", "undeclared_payload_field"),
        ("payload.dwell_ms", "out_of_bounds"),
    }


def test_event_size_limit(validator: SignalValidator, now: datetime) -> None:
    small = view(now, event_id="small")
    big = view(now, event_id="big", payload={"referrer": "r" * 500, "brand": "b" * 100})
    limits = Limits(max_event_bytes=len(msgspec.json.encode(big)) - 10)
    registered = [RegisteredEventType(d, 1) for d in validator.definitions.values()]
    v = SignalValidator(registered, limits)
    result = v.validate_events([small, big])
    assert [e.event_id for e in result.accepted] == ["small"]
    assert result.rejections[0].rule == "event_too_large"


def test_batch_limits(validator: SignalValidator, now: datetime) -> None:
    with pytest.raises(BatchTooLargeError, match="501 events"):
        validator.validate_events([view(now, event_id=f"e{i}") for i in range(501)])
    huge = b"[" + b" " * (1024 * 1024) + b"]"
    with pytest.raises(BatchTooLargeError, match="bytes"):
        validator.validate_json(huge)


@pytest.mark.parametrize("body", [b"", b"{", b'{"event_id": "x"}', b"nope", b"[1, 2"])
def test_malformed_body(validator: SignalValidator, body: bytes) -> None:
    with pytest.raises(MalformedBatchError):
        validator.validate_json(body)


def test_non_object_elements(validator: SignalValidator, now: datetime) -> None:
    body = json.dumps([view(now), 7, "x", None, []]).encode()
    result = validator.validate_json(body)
    assert len(result.accepted) == 1
    assert [r.rule for r in result.rejections] == ["not_an_object"] * 4


def test_ndjson_malformed_line_loses_nothing_else(
    validator: SignalValidator, now: datetime
) -> None:
    lines = [
        json.dumps(view(now, event_id="a")),
        '{"event_id": "b", oops',
        json.dumps(view(now, event_id="c")),
    ]
    result = validator.validate_ndjson("\n".join(lines).encode())
    assert [e.event_id for e in result.accepted] == ["a", "c"]
    (rej,) = result.rejections
    assert (rej.index, rej.rule) == (1, "malformed_json")


def test_huge_numbers_and_nesting(validator: SignalValidator, now: datetime) -> None:
    huge_int = json.dumps([view(now, payload={"dwell_ms": 10**30})]).encode()
    assert validator.validate_json(huge_int).rejections[0].rule == "out_of_bounds"
    huge_float = json.dumps([view(now)]).replace('"dwell_ms": 1200', '"dwell_ms": 1e400')
    assert validator.validate_json(huge_float.encode()).rejections[0].rule == "malformed_json"
    event = json.dumps(view(now, payload={"referrer": "@"}))
    deep = event.replace('"@"', "[" * 5000 + "]" * 5000)
    with pytest.raises(MalformedBatchError, match="recursion"):
        validator.validate_json(f"[{deep}]".encode())
    # As NDJSON the deep event is rejected alone and its neighbour survives.
    result = validator.validate_ndjson(f"{deep}\n{event}".encode())
    assert [r.rule for r in result.rejections] == ["malformed_json"]
    assert len(result.accepted) == 1


def test_outcomes_in_batch_order(validator: SignalValidator, now: datetime) -> None:
    result = validator.validate_events(
        [view(now, event_id="a"), view(now, surface="x"), view(now, event_id="c")]
    )
    kinds = [type(o).__name__ for _, o in result.outcomes()]
    assert kinds == ["view_signal", "Rejection", "view_signal"]


def test_no_registered_types_rejects_everything(now: datetime) -> None:
    result = SignalValidator([]).validate_events([view(now)])
    assert result.rejections[0].rule == "unknown_event_type"


def test_naive_now_is_not_needed(validator: SignalValidator) -> None:
    # Producers in other zones: an offset other than UTC is kept as the same instant.
    ts = datetime(2026, 1, 1, 12, tzinfo=UTC)
    event = view(ts, timestamp="2026-01-01T13:00:00+01:00")
    result = validator.validate_events([event], now=ts)
    assert result.signals()[0].timestamp == ts

"""Property tests of the validator: generated contracts, generated valid events, single mutations.

Every generated valid event must be accepted by every path and come out as the same
canonical signal; every single mutation must be rejected with its reason, without
losing its neighbours; and the compiled fast path must agree with the detailed checker.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from headwater._jsonguard import check_json
from headwater.contract._detail import check_event
from headwater.contract.definition import (
    FIELD_TYPES,
    INT64_MAX,
    INT64_MIN,
    LIST_ITEM_TYPES,
    EventTypeDefinition,
    FieldSpec,
    RegisteredEventType,
    definition_from_mapping,
)
from headwater.contract.signal import ENVELOPE_FIELDS, SIGNAL_FIELDS, Signal
from headwater.contract.validator import BatchResult, Limits, SignalValidator
from headwater.errors import MalformedBatchError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits()
WINDOW = LIMITS.window(NOW)
FLOAT_MAX = 1.7976931348623157e308

Contract = dict[str, EventTypeDefinition]
Draw = Callable[[st.SearchStrategy[Any]], Any]

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

names = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
ids = st.text(min_size=1, max_size=128)
zones = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite_floats | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
not_strings = (
    st.integers()
    | finite_floats
    | st.booleans()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)


# --- contracts ---------------------------------------------------------------------------


@st.composite
def _ordered(draw: Draw, values: st.SearchStrategy[Any]) -> tuple[Any, Any]:
    lo, hi = draw(st.none() | values), draw(st.none() | values)
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    return lo, hi


@st.composite
def field_mappings(draw: Draw) -> dict[str, Any]:
    """One payload field as a team's YAML file would hold it."""
    kind = draw(st.sampled_from(FIELD_TYPES))
    raw: dict[str, Any] = {"type": kind, "required": draw(st.booleans())}
    element = kind
    if kind == "list":
        element = raw["items"] = draw(st.sampled_from(LIST_ITEM_TYPES))
        if draw(st.booleans()):
            raw["max_items"] = draw(st.integers(0, 4))
    bounds: dict[str, tuple[str, str, st.SearchStrategy[Any]]] = {
        "string": ("min_length", "max_length", st.integers(0, 12)),
        "int": ("min", "max", st.integers(-1000, 1000) | st.integers(-(2**62), 2**62)),
        "float": ("min", "max", finite_floats | st.integers(-1000, 1000)),
    }
    if element in bounds:
        low_key, high_key, values = bounds[element]
        lo, hi = draw(_ordered(values))
        raw.update({k: v for k, v in ((low_key, lo), (high_key, hi)) if v is not None})
    if element == "enum":
        raw["values"] = draw(st.lists(st.text(max_size=8), min_size=1, max_size=5, unique=True))
    if draw(st.booleans()):
        raw["description"] = draw(st.text(max_size=20))
    return raw


@st.composite
def contracts(draw: Draw) -> Contract:
    """One to three event types, each with random surfaces, item rule and payload."""
    found: Contract = {}
    for name in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
        raw = {
            "surfaces": draw(st.lists(names, min_size=1, max_size=4, unique=True)),
            "item": draw(st.booleans()),
            "payload": draw(st.dictionaries(names, field_mappings(), max_size=6)),
            "freshness_budget": draw(st.floats(0.001, 86_400) | st.sampled_from(["30s", "5m"])),
            "description": draw(st.text(max_size=20)),
        }
        found[name] = definition_from_mapping(name, raw, "team", "generated")
    return found


def validator_for(contract: Contract, version: int = 1) -> SignalValidator:
    return SignalValidator([RegisteredEventType(d, version) for d in contract.values()], LIMITS)


# --- valid events ------------------------------------------------------------------------


def rfc3339(moment: datetime, *, zulu: bool = False) -> str:
    text = moment.isoformat()
    return text.replace("+00:00", "Z") if zulu else text


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


@st.composite
def timestamps(draw: Draw, oldest: datetime, newest: datetime) -> str:
    """An RFC 3339 string with a random offset for an instant in [oldest, newest]."""
    instant = draw(st.datetimes(_naive(oldest), _naive(newest))).replace(tzinfo=UTC)
    return rfc3339(instant.astimezone(draw(zones)), zulu=draw(st.booleans()))


def _int_range(spec: FieldSpec) -> tuple[int, int]:
    lo = INT64_MIN if spec.minimum is None else int(spec.minimum)
    hi = INT64_MAX if spec.maximum is None else int(spec.maximum)
    return lo, hi


def scalar_values(spec: FieldSpec, kind: str) -> st.SearchStrategy[Any]:
    """Valid JSON values for one element of kind ``kind`` under ``spec``'s bounds."""
    if kind == "string":
        lo = spec.min_length or 0
        hi = lo + 16 if spec.max_length is None else min(spec.max_length, lo + 16)
        return st.text(min_size=lo, max_size=hi)
    if kind == "int":
        return st.integers(*_int_range(spec))
    if kind == "float":
        lo = math.ceil(spec.minimum) if spec.minimum is not None else -(10**300)
        hi = math.floor(spec.maximum) if spec.maximum is not None else 10**300
        floats = st.floats(spec.minimum, spec.maximum, allow_nan=False, allow_infinity=False)
        # Producers send whole prices as JSON integers; they must pass as floats.
        return floats | st.integers(lo, hi) if lo <= hi else floats
    if kind == "bool":
        return st.booleans()
    if kind == "enum":
        return st.sampled_from(spec.values or ())
    assert kind == "timestamp"
    return timestamps(datetime(1900, 1, 2, tzinfo=UTC), datetime(2999, 12, 30, tzinfo=UTC))


def field_values(spec: FieldSpec) -> st.SearchStrategy[Any]:
    if spec.type != "list":
        return scalar_values(spec, spec.type)
    size = 4 if spec.max_items is None else min(spec.max_items, 4)
    return st.lists(scalar_values(spec, spec.element_type()), max_size=size)


def canonical(spec: FieldSpec, value: Any) -> Any:
    """The value a consumer reads back: timestamps in UTC, numbers of float fields as floats."""
    if isinstance(value, list):
        return [canonical(spec, v) for v in value]
    kind = spec.element_type()
    if kind == "float":
        return float(value)
    if kind == "timestamp":
        return datetime.fromisoformat(value).astimezone(UTC)
    return value


@dataclass
class Case:
    """One generated valid event, its definition and the signal it must become."""

    event: dict[str, Any]
    definition: EventTypeDefinition
    expected: Signal
    raw: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.raw = msgspec.json.encode(self.event)


@st.composite
def valid_events(draw: Draw, contract: Contract) -> Case:
    definition: EventTypeDefinition = draw(st.sampled_from(list(contract.values())))
    payload: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    for name, spec in definition.payload.items():
        how = "value" if spec.required else draw(st.sampled_from(["value", "absent", "null"]))
        if how == "null":
            payload[name] = None  # null is absent: the canonical signal omits it
        elif how == "value":
            payload[name] = draw(field_values(spec))
            expected[name] = canonical(spec, payload[name])
    stamp = draw(timestamps(WINDOW.oldest, WINDOW.newest))
    event: dict[str, Any] = {
        "event_id": draw(ids),
        "event_type": definition.name,
        "user_id": draw(ids),
        "surface": draw(st.sampled_from(definition.surfaces)),
        "timestamp": stamp,
        "payload": {k: payload[k] for k in draw(st.permutations(list(payload)))},
    }
    if definition.has_item:
        event["item_id"] = draw(ids)
    elif draw(st.booleans()):
        event["item_id"] = None
    # The tag (event_type) need not come first.
    event = {k: event[k] for k in draw(st.permutations(list(event)))}
    signal = Signal(
        event_id=event["event_id"],
        event_type=definition.name,
        user_id=event["user_id"],
        surface=event["surface"],
        timestamp=datetime.fromisoformat(stamp).astimezone(UTC),
        payload=expected,
        item_id=event.get("item_id"),
    )
    return Case(event, definition, signal)


def _datetimes(value: Any) -> list[datetime]:
    if isinstance(value, datetime):
        return [value]
    if isinstance(value, list):
        return [v for item in value for v in _datetimes(item)]
    if isinstance(value, dict):
        return [v for item in value.values() for v in _datetimes(item)]
    return []


def json_body(raws: list[bytes]) -> bytes:
    return b"[" + b",".join(raws) + b"]"


def assert_accepted_as_expected(result: BatchResult, cases: list[Case]) -> None:
    assert result.rejections == []
    assert result.accepted_indices == list(range(len(cases)))
    signals = result.signals()
    for signal, case in zip(signals, cases, strict=True):
        assert signal == case.expected
        # Equal instants compare equal across offsets: check that each one is UTC as well.
        assert all(t.tzinfo is UTC for t in [signal.timestamp, *_datetimes(signal.payload)])


@PROPERTY_SETTINGS
@given(data=st.data())
def test_generated_valid_events_are_accepted_by_every_path(data: st.DataObject) -> None:
    contract = data.draw(contracts(), label="contract")
    validator = validator_for(contract, data.draw(st.integers(1, 5), label="version"))
    cases = data.draw(st.lists(valid_events(contract), min_size=1, max_size=8), label="events")
    raws = [c.raw for c in cases]
    assert_accepted_as_expected(validator.validate_json(json_body(raws), now=NOW), cases)
    assert_accepted_as_expected(validator.validate_ndjson(b"\n".join(raws), now=NOW), cases)
    assert_accepted_as_expected(validator.validate_events([c.event for c in cases], now=NOW), cases)
    for raw in raws:
        assert check_event(msgspec.json.decode(raw), contract, WINDOW) == []


# --- mutations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    """A broken event: its bytes and the violation it must be rejected with."""

    raw: bytes
    field: str
    rule: str

    @property
    def event_id(self) -> str | None:
        event = msgspec.json.decode(self.raw)
        event_id = event.get("event_id") if isinstance(event, dict) else None
        return event_id if isinstance(event_id, str) else None


def _set(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``event`` with a top-level key or ``payload.name`` set."""
    out = dict(event)
    if path.startswith("payload."):
        payload = out.get("payload")
        payload = payload if isinstance(payload, dict) else {}
        out["payload"] = {**payload, path.removeprefix("payload."): value}
    else:
        out[path] = value
    return out


def _without(event: dict[str, Any], path: str) -> dict[str, Any]:
    out = dict(event)
    if path.startswith("payload.") and isinstance(out.get("payload"), dict):
        out["payload"] = dict(out["payload"])
        out["payload"].pop(path.removeprefix("payload."), None)
    else:
        out.pop(path, None)
    return out


def _wrong_values(kind: str) -> st.SearchStrategy[Any]:
    """JSON values of the wrong type for an element of kind ``kind``."""
    if kind in ("string", "enum", "timestamp"):
        return not_strings
    if kind == "int":
        whole_float = st.integers(-(2**50), 2**50).map(float)  # 2.0 is a float, not an int
        return (
            st.text(max_size=4)
            | st.booleans()
            | whole_float
            | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
        )
    if kind == "float":
        return st.text(max_size=4) | st.booleans() | st.lists(st.integers(), max_size=2)
    if kind == "bool":
        return st.integers() | st.text(max_size=4) | st.lists(st.booleans(), max_size=2)
    assert kind == "list"
    return (
        st.text(max_size=4)
        | st.integers()
        | st.booleans()
        | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
    )


def _out_of_bounds(spec: FieldSpec, kind: str) -> list[st.SearchStrategy[Any]]:
    """Strategies for element values outside ``spec``'s bounds (empty when unbounded)."""
    found: list[st.SearchStrategy[Any]] = []
    if kind == "string":
        if spec.min_length:
            found.append(st.text(max_size=spec.min_length - 1))
        if spec.max_length is not None:
            found.append(st.text(min_size=spec.max_length + 1, max_size=spec.max_length + 8))
    elif kind == "int":
        lo, hi = _int_range(spec)
        found += [st.integers(max_value=lo - 1), st.integers(min_value=hi + 1)]
    elif kind == "float":
        if spec.minimum is not None and spec.minimum > -FLOAT_MAX:
            found.append(
                st.floats(
                    max_value=spec.minimum, exclude_max=True, allow_infinity=False, allow_nan=False
                )
            )
        if spec.maximum is not None and spec.maximum < FLOAT_MAX:
            found.append(
                st.floats(
                    min_value=spec.maximum, exclude_min=True, allow_infinity=False, allow_nan=False
                )
            )
        # A JSON number beyond a 64-bit float is out of range for every float field.
        found.append(st.sampled_from([10**309, -(10**309), 10**400]))
    return found


def _payload_targets(
    definition: EventTypeDefinition, kinds: tuple[str, ...] | None = None
) -> list[tuple[str, FieldSpec]]:
    return [
        (f"payload.{name}", spec)
        for name, spec in definition.payload.items()
        if kinds is None or spec.element_type() in kinds
    ]


def _put_element(
    draw: Draw, case: Case, path: str, spec: FieldSpec, bad: st.SearchStrategy[Any]
) -> tuple[dict[str, Any], str]:
    """Set a field to a bad value, or, for a list, a list holding one bad element."""
    value = draw(bad)
    if spec.type != "list":
        return _set(case.event, path, value), path
    good = draw(st.lists(scalar_values(spec, spec.element_type()), max_size=2))
    index = draw(st.integers(0, len(good)))
    good.insert(index, value)
    return _set(case.event, path, good), f"{path}[{index}]"


def m_unknown_event_type(draw: Draw, case: Case, contract: Contract) -> Mutant:
    name = draw(st.text().filter(lambda n: n not in contract))
    return Mutant(
        msgspec.json.encode(_set(case.event, "event_type", name)),
        "event_type",
        "unknown_event_type",
    )


def m_surface_not_allowed(draw: Draw, case: Case, contract: Contract) -> Mutant:
    surface = draw(st.text().filter(lambda s: s not in case.definition.surfaces))
    return Mutant(
        msgspec.json.encode(_set(case.event, "surface", surface)), "surface", "surface_not_allowed"
    )


def m_undeclared_payload_field(draw: Draw, case: Case, contract: Contract) -> Mutant:
    key = draw(st.text(max_size=10).filter(lambda k: k not in case.definition.payload))
    path = f"payload.{key}"
    return Mutant(
        msgspec.json.encode(_set(case.event, path, draw(json_values))),
        path,
        "undeclared_payload_field",
    )


def m_wrong_type(draw: Draw, case: Case, contract: Contract) -> Mutant:
    top = ["event_id", "user_id", "surface", "timestamp", "event_type", "payload"]
    if case.definition.has_item:
        top.append("item_id")
    targets: list[tuple[str, FieldSpec | None]] = [(t, None) for t in top]
    targets += _payload_targets(case.definition)
    path, spec = draw(st.sampled_from(targets))
    if spec is None:
        bad = (
            st.none() | not_strings
            if path != "payload"
            else st.none()
            | st.lists(st.integers(), max_size=2)
            | st.text(max_size=3)
            | st.integers()
        )
        if path == "item_id":
            bad = not_strings  # a null item_id is item_required, not wrong_type
        return Mutant(msgspec.json.encode(_set(case.event, path, draw(bad))), path, "wrong_type")
    if spec.required and draw(st.booleans()):
        return Mutant(msgspec.json.encode(_set(case.event, path, None)), path, "wrong_type")
    if spec.type == "list" and draw(st.booleans()):
        event, where = _put_element(draw, case, path, spec, _wrong_values(spec.element_type()))
        return Mutant(msgspec.json.encode(event), where, "wrong_type")
    value = draw(_wrong_values(spec.type))
    return Mutant(msgspec.json.encode(_set(case.event, path, value)), path, "wrong_type")


def m_missing_required_field(draw: Draw, case: Case, contract: Contract) -> Mutant:
    targets = ["event_id", "event_type", "user_id", "surface", "timestamp", "payload"]
    targets += [p for p, s in _payload_targets(case.definition) if s.required]
    path = draw(st.sampled_from(targets))
    return Mutant(msgspec.json.encode(_without(case.event, path)), path, "missing_required_field")


def m_id_out_of_bounds(draw: Draw, case: Case, contract: Contract) -> Mutant:
    path = draw(
        st.sampled_from(
            ["event_id", "user_id", "item_id"]
            if case.definition.has_item
            else ["event_id", "user_id"]
        )
    )
    value = draw(st.just("") | st.text(min_size=129, max_size=140))
    return Mutant(msgspec.json.encode(_set(case.event, path, value)), path, "out_of_bounds")


def m_value_out_of_bounds(draw: Draw, case: Case, contract: Contract) -> Mutant | None:
    options: list[tuple[str, FieldSpec, st.SearchStrategy[Any], bool]] = []
    for path, spec in _payload_targets(case.definition):
        options += [(path, spec, s, True) for s in _out_of_bounds(spec, spec.element_type())]
        if spec.max_items is not None:
            many = st.lists(
                scalar_values(spec, spec.element_type()),
                min_size=spec.max_items + 1,
                max_size=spec.max_items + 3,
            )
            options.append((path, spec, many, False))
    if not options:
        return None
    path, spec, bad, per_element = draw(st.sampled_from(options))
    if per_element:
        event, where = _put_element(draw, case, path, spec, bad)
    else:
        event, where = _set(case.event, path, draw(bad)), path
    return Mutant(msgspec.json.encode(event), where, "out_of_bounds")


def m_invalid_enum_value(draw: Draw, case: Case, contract: Contract) -> Mutant | None:
    targets = _payload_targets(case.definition, ("enum",))
    if not targets:
        return None
    path, spec = draw(st.sampled_from(targets))
    bad = st.text(max_size=10).filter(lambda v: v not in (spec.values or ()))
    event, where = _put_element(draw, case, path, spec, bad)
    return Mutant(msgspec.json.encode(event), where, "invalid_enum_value")


def m_timestamp_without_offset(draw: Draw, case: Case, contract: Contract) -> Mutant:
    targets: list[tuple[str, FieldSpec | None]] = [("timestamp", None)]
    targets += _payload_targets(case.definition, ("timestamp",))
    path, spec = draw(st.sampled_from(targets))
    naive = st.datetimes(datetime(1900, 1, 2), datetime(2999, 12, 30)).map(datetime.isoformat)
    if spec is None:
        value = _naive(case.expected.timestamp).isoformat()
        return Mutant(
            msgspec.json.encode(_set(case.event, path, value)), path, "timestamp_without_offset"
        )
    event, where = _put_element(draw, case, path, spec, naive)
    return Mutant(msgspec.json.encode(event), where, "timestamp_without_offset")


def m_invalid_timestamp(draw: Draw, case: Case, contract: Contract) -> Mutant:
    value = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz :", max_size=12))
    return Mutant(
        msgspec.json.encode(_set(case.event, "timestamp", value)), "timestamp", "invalid_timestamp"
    )


def m_timestamp_too_old(draw: Draw, case: Case, contract: Contract) -> Mutant:
    before = WINDOW.oldest - timedelta(microseconds=draw(st.integers(1, 10**15)))
    value = draw(timestamps(before, before))
    return Mutant(
        msgspec.json.encode(_set(case.event, "timestamp", value)), "timestamp", "timestamp_too_old"
    )


def m_timestamp_in_future(draw: Draw, case: Case, contract: Contract) -> Mutant:
    after = WINDOW.newest + timedelta(microseconds=draw(st.integers(1, 10**15)))
    value = draw(timestamps(after, after))
    return Mutant(
        msgspec.json.encode(_set(case.event, "timestamp", value)),
        "timestamp",
        "timestamp_in_future",
    )


def m_envelope_field_set(draw: Draw, case: Case, contract: Contract) -> Mutant:
    key = draw(st.sampled_from(ENVELOPE_FIELDS))
    plausible = {
        "producer": st.text(max_size=8),
        "schema_version": st.integers(0, 9),
        "received_at": timestamps(WINDOW.oldest, WINDOW.newest),
        "request_id": st.text(max_size=12),
    }[key]
    value = draw(plausible | json_values)
    return Mutant(msgspec.json.encode(_set(case.event, key, value)), key, "envelope_field_set")


def m_unknown_field(draw: Draw, case: Case, contract: Contract) -> Mutant:
    known = (*SIGNAL_FIELDS, *ENVELOPE_FIELDS)
    key = draw(st.text(max_size=10).filter(lambda k: k not in known))
    return Mutant(
        msgspec.json.encode(_set(case.event, key, draw(json_values))), key, "unknown_field"
    )


def m_item_not_allowed(draw: Draw, case: Case, contract: Contract) -> Mutant | None:
    if case.definition.has_item:
        return None
    value = draw(st.text(max_size=130) | st.integers())
    return Mutant(
        msgspec.json.encode(_set(case.event, "item_id", value)), "item_id", "item_not_allowed"
    )


def m_item_required(draw: Draw, case: Case, contract: Contract) -> Mutant | None:
    if not case.definition.has_item:
        return None
    event = (
        _without(case.event, "item_id")
        if draw(st.booleans())
        else _set(case.event, "item_id", None)
    )
    return Mutant(msgspec.json.encode(event), "item_id", "item_required")


def m_event_too_large(draw: Draw, case: Case, contract: Contract) -> Mutant:
    # Whitespace keeps the event valid JSON and otherwise valid: only its size is wrong.
    padding = b" " * (LIMITS.max_event_bytes - len(case.raw) + draw(st.integers(1, 64)))
    return Mutant(b"{" + padding + case.raw[1:], "", "event_too_large")


MUTATIONS: dict[str, Callable[[Draw, Case, Contract], Mutant | None]] = {
    # The richest first: Hypothesis leans towards the first entry while it explores.
    "wrong_type": m_wrong_type,
    "value_out_of_bounds": m_value_out_of_bounds,
    "invalid_enum_value": m_invalid_enum_value,
    "missing_required_field": m_missing_required_field,
    "timestamp_without_offset": m_timestamp_without_offset,
    "undeclared_payload_field": m_undeclared_payload_field,
    "id_out_of_bounds": m_id_out_of_bounds,
    "unknown_event_type": m_unknown_event_type,
    "surface_not_allowed": m_surface_not_allowed,
    "invalid_timestamp": m_invalid_timestamp,
    "timestamp_too_old": m_timestamp_too_old,
    "timestamp_in_future": m_timestamp_in_future,
    "envelope_field_set": m_envelope_field_set,
    "unknown_field": m_unknown_field,
    "item_not_allowed": m_item_not_allowed,
    "item_required": m_item_required,
    "event_too_large": m_event_too_large,
}


@st.composite
def mutants(draw: Draw, case: Case, contract: Contract) -> Mutant:
    """One mutation from the catalogue that applies to this event."""
    names = list(MUTATIONS)
    # Uniform first pick; the permutation is the fallback when the pick does not apply.
    for name in [draw(st.sampled_from(names)), *draw(st.permutations(names))]:
        mutant = MUTATIONS[name](draw, case, contract)
        if mutant is not None:
            event(f"mutation: {name}")
            return mutant
    raise AssertionError("unreachable: several mutations apply to every event")


def assert_paths_agree(validator: SignalValidator, raw: bytes) -> None:
    """The compiled path accepts an event iff the detailed checker finds nothing wrong."""
    result = validator.validate_json(json_body([raw]), now=NOW)
    problems = check_event(msgspec.json.decode(raw), validator.definitions, WINDOW)
    fits = len(raw) <= LIMITS.max_event_bytes
    assert result.all_accepted == (fits and not problems), (raw, problems)
    if not result.all_accepted:
        # The detailed checker names the problem: no event is refused with a bare "invalid".
        assert result.rejections[0].rule != "invalid", result.rejections[0]


@PROPERTY_SETTINGS
@given(data=st.data())
def test_single_mutations_are_rejected_and_neighbours_survive(data: st.DataObject) -> None:
    contract = data.draw(contracts(), label="contract")
    validator = validator_for(contract)
    cases = data.draw(st.lists(valid_events(contract), min_size=1, max_size=6), label="events")
    broken = data.draw(
        st.lists(st.booleans(), min_size=len(cases), max_size=len(cases)).filter(any),
        label="broken",
    )
    raws: list[bytes] = []
    expected: dict[int, Mutant] = {}
    for index, (case, is_broken) in enumerate(zip(cases, broken, strict=True)):
        if is_broken:
            expected[index] = data.draw(mutants(case, contract), label=f"mutant {index}")
            raws.append(expected[index].raw)
        else:
            raws.append(case.raw)
    kept = [i for i in range(len(cases)) if i not in expected]

    body = json_body(raws)
    as_json = validator.validate_json(body, now=NOW)
    # As the gateway calls it: the longest event as the JSON guard measured it.
    results = [as_json, validator.validate_ndjson(b"\n".join(raws), now=NOW)]
    with contextlib.suppress(MalformedBatchError):  # a mutant repeating a key
        results.append(
            validator.validate_json(body, now=NOW, longest_event=check_json(body).longest)
        )
    for result in results:
        assert result.accepted_indices == kept
        assert [e.event_id for e in result.accepted] == [cases[i].event["event_id"] for i in kept]
        assert [r.index for r in result.rejections] == sorted(expected)
        for rejection in result.rejections:
            mutant = expected[rejection.index]
            assert rejection.event_id == mutant.event_id
            found = {(v.field, v.rule) for v in rejection.violations}
            assert (mutant.field, mutant.rule) in found, (mutant, rejection)
            assert (rejection.field, rejection.rule) == (
                rejection.violations[0].field,
                rejection.violations[0].rule,
            )
    assert all(result.rejections == as_json.rejections for result in results)
    for raw in raws:
        assert_paths_agree(validator, raw)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_fast_and_detailed_paths_agree_on_stacked_mutations(data: st.DataObject) -> None:
    contract = data.draw(contracts(), label="contract")
    validator = validator_for(contract)
    case = data.draw(valid_events(contract), label="event")
    for _ in range(data.draw(st.integers(0, 3), label="mutations")):
        try:
            event = msgspec.json.decode(case.raw)
        except msgspec.DecodeError:
            break
        if not isinstance(event, dict) or len(case.raw) > LIMITS.max_event_bytes:
            break
        # Each mutant becomes the base of the next; its definition may no longer fit.
        mutant = data.draw(mutants(Case(event, case.definition, case.expected), contract))
        case = Case(msgspec.json.decode(mutant.raw), case.definition, case.expected)
        case.raw = mutant.raw
    assert_paths_agree(validator, case.raw)


# --- regressions found by the properties above --------------------------------------------


def _one_field(spec: FieldSpec) -> SignalValidator:
    definition = EventTypeDefinition(
        name="t", owner="o", surfaces=("web",), has_item=False, payload={"x": spec}
    )
    return validator_for({"t": definition})


def _event(value: Any) -> bytes:
    return msgspec.json.encode(
        [
            {
                "event_id": "e",
                "event_type": "t",
                "user_id": "u",
                "surface": "web",
                "timestamp": rfc3339(NOW),
                "payload": {"x": value},
            }
        ]
    )


@pytest.mark.parametrize("value", [10**309, -(10**309), [10**400]])
def test_integer_beyond_a_double_is_out_of_bounds_for_a_float(value: Any) -> None:
    spec = (
        FieldSpec(type="list", items="float")
        if isinstance(value, list)
        else FieldSpec(type="float")
    )
    (rejection,) = _one_field(spec).validate_json(_event(value), now=NOW).rejections
    assert rejection.rule == "out_of_bounds"


def test_integer_rounding_onto_a_float_bound_is_judged_as_the_float_it_becomes() -> None:
    # 10**17 + 1 is read as the float 1e17, which is within maximum 1e17: both paths agree.
    validator = _one_field(FieldSpec(type="float", maximum=1e17))
    (signal,) = validator.validate_json(_event(10**17 + 1), now=NOW).signals()
    assert signal.payload == {"x": 1e17}
    assert (
        check_event(
            {
                "event_id": "e",
                "event_type": "t",
                "user_id": "u",
                "surface": "web",
                "timestamp": rfc3339(NOW),
                "payload": {"x": 10**17 + 1},
            },
            validator.definitions,
            WINDOW,
        )
        == []
    )

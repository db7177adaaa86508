"""The per-event checker that names every problem of a failing event.

It runs only for events the compiled decoders refused (or that failed a time
check), so it favours clear reports over speed. Its verdicts must agree with the
compiled path: property tests hold the two to that.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from headwater._time import format_time
from headwater.contract._compiled import ID_MAX_LENGTH, AwareDatetime
from headwater.contract.definition import INT64_MAX, INT64_MIN, EventTypeDefinition, FieldSpec
from headwater.contract.signal import ENVELOPE_FIELDS, SIGNAL_FIELDS

__all__ = ["Problem", "TimeWindow", "check_event", "check_time"]

Problem = tuple[str, str, str]  # (field path, rule, message)


class TimeWindow(msgspec.Struct, frozen=True):
    """The accepted range of event timestamps for one batch."""

    oldest: datetime
    newest: datetime


def check_time(ts: datetime, window: TimeWindow, path: str = "timestamp") -> Problem | None:
    """The horizon problem of an aware timestamp, if any."""
    if ts < window.oldest:
        return (
            path,
            "timestamp_too_old",
            f"{format_time(ts)} is older than the accepted horizon ({format_time(window.oldest)})",
        )
    if ts > window.newest:
        return (
            path,
            "timestamp_in_future",
            f"{format_time(ts)} is later than {format_time(window.newest)}",
        )
    return None


def _parse_timestamp(value: Any, path: str) -> tuple[datetime | None, Problem | None]:
    if not isinstance(value, str):
        return None, (path, "wrong_type", f"expected an RFC 3339 string, got {_json_type(value)}")
    try:
        parsed = msgspec.convert(value, datetime)
    except msgspec.ValidationError:
        return None, (path, "invalid_timestamp", f"{value!r} is not an RFC 3339 timestamp")
    try:
        msgspec.convert(value, AwareDatetime)
    except msgspec.ValidationError:
        return None, (
            path,
            "timestamp_without_offset",
            f"{value!r} has no UTC offset (add Z or +hh:mm)",
        )
    return parsed, None


def _json_type(value: Any) -> str:
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _check_id(event: Mapping[str, Any], name: str, out: list[Problem]) -> None:
    if name not in event:
        out.append((name, "missing_required_field", f"{name} is required"))
        return
    value = event[name]
    if not isinstance(value, str):
        out.append((name, "wrong_type", f"expected a string, got {_json_type(value)}"))
    elif not 1 <= len(value) <= ID_MAX_LENGTH:
        out.append(
            (name, "out_of_bounds", f"must be 1 to {ID_MAX_LENGTH} characters, got {len(value)}")
        )


def _check_number(value: Any, spec: FieldSpec, kind: str, path: str) -> Problem | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return (path, "wrong_type", f"expected {kind}, got {_json_type(value)}")
    if kind == "int" and not isinstance(value, int):
        return (path, "wrong_type", "expected an integer, got a number with a fraction or exponent")
    if kind == "float" and isinstance(value, int):
        # The compiled path reads a JSON integer as the nearest float: judge that value.
        try:
            value = float(value)
        except OverflowError:
            return (path, "out_of_bounds", "beyond the range of a 64-bit float")
    lo = spec.minimum
    hi = spec.maximum
    if kind == "int":
        lo = INT64_MIN if lo is None else lo
        hi = INT64_MAX if hi is None else hi
    if lo is not None and value < lo:
        return (path, "out_of_bounds", f"{value} is below the minimum {lo:g}")
    if hi is not None and value > hi:
        return (path, "out_of_bounds", f"{value} is above the maximum {hi:g}")
    return None


def _check_scalar(value: Any, spec: FieldSpec, kind: str, path: str) -> Problem | None:
    problem: Problem | None = None
    if kind in ("int", "float"):
        problem = _check_number(value, spec, kind, path)
    elif kind == "bool":
        if not isinstance(value, bool):
            problem = (path, "wrong_type", f"expected a boolean, got {_json_type(value)}")
    elif kind == "timestamp":
        problem = _parse_timestamp(value, path)[1]
    elif not isinstance(value, str):
        problem = (path, "wrong_type", f"expected a string, got {_json_type(value)}")
    elif kind == "enum":
        if value not in (spec.values or ()):
            problem = (
                path,
                "invalid_enum_value",
                f"{value!r} is not one of {list(spec.values or ())}",
            )
    elif spec.min_length is not None and len(value) < spec.min_length:
        problem = (path, "out_of_bounds", f"shorter than {spec.min_length} characters")
    elif spec.max_length is not None and len(value) > spec.max_length:
        problem = (path, "out_of_bounds", f"longer than {spec.max_length} characters")
    return problem


def _check_field(value: Any, spec: FieldSpec, path: str, out: list[Problem]) -> None:
    if value is None:
        if spec.required:
            out.append((path, "wrong_type", f"expected {spec.type}, got null"))
        return
    if spec.type != "list":
        if (p := _check_scalar(value, spec, spec.type, path)) is not None:
            out.append(p)
        return
    if not isinstance(value, list):
        out.append((path, "wrong_type", f"expected an array, got {_json_type(value)}"))
        return
    if spec.max_items is not None and len(value) > spec.max_items:
        out.append((path, "out_of_bounds", f"{len(value)} items, at most {spec.max_items}"))
    for i, item in enumerate(value):
        if (p := _check_scalar(item, spec, spec.items or "string", f"{path}[{i}]")) is not None:
            out.append(p)


def _check_payload(
    event: Mapping[str, Any], definition: EventTypeDefinition, out: list[Problem]
) -> None:
    if "payload" not in event:
        out.append(("payload", "missing_required_field", "payload is required (use {} if empty)"))
        return
    payload = event["payload"]
    if not isinstance(payload, dict):
        out.append(("payload", "wrong_type", f"expected an object, got {_json_type(payload)}"))
        return
    out.extend(
        (
            f"payload.{key}",
            "undeclared_payload_field",
            f"{definition.name} declares no payload field {key!r}",
        )
        for key in payload
        if key not in definition.payload
    )
    for name, spec in definition.payload.items():
        if name in payload:
            _check_field(payload[name], spec, f"payload.{name}", out)
        elif spec.required:
            out.append((f"payload.{name}", "missing_required_field", f"{name} is required"))


def _check_item(
    event: Mapping[str, Any], definition: EventTypeDefinition, out: list[Problem]
) -> None:
    if definition.has_item:
        if event.get("item_id") is None:
            out.append(
                (
                    "item_id",
                    "item_required",
                    f"{definition.name} carries an item: item_id is required",
                )
            )
        else:
            _check_id(event, "item_id", out)
    elif event.get("item_id") is not None:
        out.append(
            (
                "item_id",
                "item_not_allowed",
                f"{definition.name} declares no item: item_id must be absent or null",
            )
        )


def _event_type(
    event: dict[str, Any], definitions: Mapping[str, EventTypeDefinition], out: list[Problem]
) -> EventTypeDefinition | None:
    etype = event.get("event_type")
    if "event_type" not in event:
        out.append(("event_type", "missing_required_field", "event_type is required"))
        return None
    if not isinstance(etype, str):
        out.append(("event_type", "wrong_type", f"expected a string, got {_json_type(etype)}"))
        return None
    definition = definitions.get(etype)
    if definition is None:
        out.append(
            (
                "event_type",
                "unknown_event_type",
                f"no contract registered for {etype!r}; known: {sorted(definitions)}",
            )
        )
    return definition


def _surface(
    event: dict[str, Any], definition: EventTypeDefinition | None, out: list[Problem]
) -> None:
    surface = event.get("surface")
    if "surface" not in event:
        out.append(("surface", "missing_required_field", "surface is required"))
    elif not isinstance(surface, str):
        out.append(("surface", "wrong_type", f"expected a string, got {_json_type(surface)}"))
    elif definition is not None and surface not in definition.surfaces:
        out.append(
            (
                "surface",
                "surface_not_allowed",
                (
                    f"{surface!r} is not allowed for {definition.name}; "
                    f"allowed: {list(definition.surfaces)}"
                ),
            )
        )


def _timestamp(event: dict[str, Any], window: TimeWindow, out: list[Problem]) -> None:
    if "timestamp" not in event:
        out.append(("timestamp", "missing_required_field", "timestamp is required"))
        return
    ts, problem = _parse_timestamp(event["timestamp"], "timestamp")
    if problem is None and ts is not None:
        problem = check_time(ts, window)
    if problem is not None:
        out.append(problem)


def _extra_keys(event: dict[str, Any], out: list[Problem]) -> None:
    for key in event:
        if key in ENVELOPE_FIELDS:
            out.append((key, "envelope_field_set", f"{key} is set by headwater, not the producer"))
        elif key not in SIGNAL_FIELDS:
            out.append((key, "unknown_field", f"{key!r} is not a field of the canonical signal"))


def check_event(
    event: Any, definitions: Mapping[str, EventTypeDefinition], window: TimeWindow
) -> list[Problem]:
    """Every problem of one decoded event, in field order."""
    if not isinstance(event, dict):
        return [("", "not_an_object", f"expected a JSON object, got {_json_type(event)}")]
    out: list[Problem] = []
    _check_id(event, "event_id", out)
    definition = _event_type(event, definitions, out)
    _check_id(event, "user_id", out)
    if definition is not None:
        _check_item(event, definition, out)
    _surface(event, definition, out)
    _timestamp(event, window, out)
    if definition is not None:
        _check_payload(event, definition, out)
    _extra_keys(event, out)
    return out

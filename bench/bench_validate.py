"""Contract validation throughput: headwater's compiled validator against plain jsonschema.

    .venv/bin/python bench/bench_validate.py

Builds realistic signals with the demo traffic generator against the shipped
contracts (registered as version 1), encodes them as 500-event JSON batches and
measures, pinned to one core, the best of several repetitions of:

(a) ``SignalValidator.validate_json`` over all-valid batches,
(b) the same over batches with about 2% invalid events,
(c) ``jsonschema`` (Draft 2020-12, one validator compiled per event type, a schema
    equivalent to the contract) over the same valid events after ``json.loads``,
(d) the ratio a / c.

Prints one JSON object on stdout. The machine may be noisy: compare the ratio, which
is measured in the same run, before the absolute figures.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import msgspec
from jsonschema import Draft202012Validator

from _common import best_of, emit, pin_one_core  # bench/ is on sys.path when run as a script
from headwater.contract._compiled import ID_MAX_LENGTH
from headwater.contract.definition import (
    INT64_MAX,
    INT64_MIN,
    EventTypeDefinition,
    FieldSpec,
    RegisteredEventType,
)
from headwater.contract.loader import default_definitions
from headwater.contract.validator import SignalValidator
from headwater.demo.traffic import Traffic

BATCH = 500
HEADWATER_EVENTS = 200_000
JSONSCHEMA_EVENTS = 10_000
REPEATS = 5
INVALID_RATE = 0.02
TARGET_EPS = 1_000_000
TARGET_RATIO = 30.0
# RFC 3339 date-time with a mandatory offset (what msgspec accepts for an aware datetime).
RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"


# --- JSON Schema equivalent of a contract ---------------------------------------------------


def _element_schema(spec: FieldSpec, kind: str) -> dict[str, Any]:
    if kind == "string":
        schema: dict[str, Any] = {"type": "string"}
        if spec.min_length is not None:
            schema["minLength"] = spec.min_length
        if spec.max_length is not None:
            schema["maxLength"] = spec.max_length
        return schema
    if kind in ("int", "float"):
        schema = {"type": "integer" if kind == "int" else "number"}
        lo, hi = spec.minimum, spec.maximum
        if kind == "int":
            lo = INT64_MIN if lo is None else lo
            hi = INT64_MAX if hi is None else hi
        if lo is not None:
            schema["minimum"] = lo
        if hi is not None:
            schema["maximum"] = hi
        return schema
    if kind == "bool":
        return {"type": "boolean"}
    if kind == "enum":
        return {"enum": list(spec.values or ())}
    assert kind == "timestamp"
    return {"type": "string", "pattern": RFC3339}


def _field_schema(spec: FieldSpec) -> dict[str, Any]:
    if spec.type == "list":
        schema: dict[str, Any] = {
            "type": "array",
            "items": _element_schema(spec, spec.items or "string"),
        }
        if spec.max_items is not None:
            schema["maxItems"] = spec.max_items
    else:
        schema = _element_schema(spec, spec.type)
    if spec.required:
        return schema
    # An optional field may be null, as in the compiled contract.
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    return {**schema, "type": [schema["type"], "null"]}


def event_schema(definition: EventTypeDefinition) -> dict[str, Any]:
    """A JSON Schema for one event type: the canonical envelope and its payload."""
    ident = {"type": "string", "minLength": 1, "maxLength": ID_MAX_LENGTH}
    required = ["event_id", "event_type", "user_id", "surface", "timestamp", "payload"]
    if definition.has_item:
        required.append("item_id")
    payload = {
        "type": "object",
        "additionalProperties": False,
        "required": [n for n, s in definition.payload.items() if s.required],
        "properties": {n: _field_schema(s) for n, s in definition.payload.items()},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": {
            "event_id": ident,
            "event_type": {"const": definition.name},
            "user_id": ident,
            "item_id": ident if definition.has_item else {"type": "null"},
            "surface": {"enum": list(definition.surfaces)},
            "timestamp": {"type": "string", "pattern": RFC3339},
            "payload": payload,
        },
    }


# --- measurement --------------------------------------------------------------------------


def make_batches(traffic: Traffic, events: int) -> list[bytes]:
    return [msgspec.json.encode(traffic.batch(BATCH)) for _ in range(events // BATCH)]


def main() -> None:
    pin_one_core()
    now = datetime.now(UTC)
    definitions = default_definitions()
    validator = SignalValidator([RegisteredEventType(d, 1) for d in definitions.values()])
    schemas = {n: Draft202012Validator(event_schema(d)) for n, d in definitions.items()}
    for schema in schemas.values():
        Draft202012Validator.check_schema(schema.schema)

    valid = make_batches(Traffic(seed=7, now=lambda: now), HEADWATER_EVENTS)
    mixed = make_batches(
        Traffic(seed=8, now=lambda: now, invalid_rate=INVALID_RATE), HEADWATER_EVENTS
    )
    sample = valid[: JSONSCHEMA_EVENTS // BATCH]

    # Sanity before timing: every valid event passes both, and the schema is equivalent
    # on the mixed batches (except the time window, which JSON Schema cannot express).
    assert all(validator.validate_json(b, now=now).all_accepted for b in valid)
    rejected = sum(len(validator.validate_json(b, now=now).rejections) for b in mixed)
    assert all(schemas[e["event_type"]].is_valid(e) for b in sample for e in json.loads(b))
    disagreements = 0
    for body in mixed[: JSONSCHEMA_EVENTS // BATCH]:
        result = validator.validate_json(body, now=now)
        too_old = {r.index for r in result.rejections if r.rule == "timestamp_too_old"}
        for index, event in enumerate(json.loads(body)):
            schema = schemas.get(event.get("event_type"))
            by_schema = schema is not None and schema.is_valid(event)
            by_headwater = index in result.accepted_indices
            disagreements += by_schema != by_headwater and index not in too_old

    def headwater(batches: list[bytes]) -> Callable[[], int]:
        def run() -> int:
            for body in batches:
                validator.validate_json(body, now=now)
            return len(batches) * BATCH

        return run

    def jsonschema_run() -> int:
        for body in sample:
            for event in json.loads(body):
                schemas[event["event_type"]].is_valid(event)
        return len(sample) * BATCH

    valid_eps, _ = best_of(REPEATS, headwater(valid))
    mixed_eps, _ = best_of(REPEATS, headwater(mixed))
    jsonschema_eps, _ = best_of(REPEATS, jsonschema_run)
    ratio = valid_eps / jsonschema_eps
    figures = {
        "msgspec": version("msgspec"),
        "jsonschema": version("jsonschema"),
        "batch_size": BATCH,
        "repeats": REPEATS,
        "events": HEADWATER_EVENTS,
        "jsonschema_events": len(sample) * BATCH,
        "headwater_valid_eps": round(valid_eps),
        "headwater_2pct_invalid_eps": round(mixed_eps),
        "invalid_share": round(rejected / HEADWATER_EVENTS, 4),
        "jsonschema_eps": round(jsonschema_eps),
        "ratio": round(ratio, 1),
        "schema_disagreements": disagreements,
        "target_eps": TARGET_EPS,
        "target_ratio": TARGET_RATIO,
        "targets_met": valid_eps >= TARGET_EPS and ratio >= TARGET_RATIO,
    }
    emit("validate", figures)


if __name__ == "__main__":
    main()

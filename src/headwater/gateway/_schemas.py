"""OpenAPI descriptions of bodies the gateway reads raw (for speed) and of its answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "CONTRACT_DOCUMENT_SCHEMA",
    "FEATURES_RESPONSE",
    "PUBLISH_BODY_SCHEMA",
    "PUBLISH_RESPONSES",
    "errors",
    "json_body",
]

_ID = {"type": "string", "minLength": 1, "maxLength": 128}

SIGNAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event_id", "event_type", "user_id", "surface", "timestamp", "payload"],
    "properties": {
        "event_id": {
            **_ID,
            "description": "Producer-assigned, globally unique; the idempotency key",
        },
        "event_type": {"type": "string", "description": "A registered event type, e.g. view"},
        "user_id": _ID,
        "item_id": {
            "anyOf": [_ID, {"type": "null"}],
            "description": "Required for types that carry an item, absent otherwise",
        },
        "surface": {"type": "string", "description": "Where it happened, e.g. web or ios"},
        "timestamp": {
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 with an offset; at most 7 days old",
        },
        "payload": {"type": "object", "description": "Fields declared by the event type"},
    },
    "additionalProperties": False,
}

PUBLISH_BODY_SCHEMA: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": {"type": "array", "items": SIGNAL_SCHEMA, "maxItems": 500}},
        "application/x-ndjson": {
            "schema": {"type": "string", "description": "one JSON event per line"}
        },
    },
}

_RESULT = {
    "type": "object",
    "required": ["index", "status"],
    "properties": {
        "index": {"type": "integer"},
        "status": {"type": "string", "enum": ["accepted", "duplicate", "rejected"]},
        "event_id": {"type": ["string", "null"]},
        "field": {"type": "string"},
        "rule": {"type": "string"},
        "message": {"type": "string"},
        "violations": {"type": "array", "items": {"type": "object"}},
    },
}

_OUTCOME = {
    "type": "object",
    "required": ["accepted", "duplicates", "rejected", "producer", "received_at", "results"],
    "properties": {
        "accepted": {"type": "integer"},
        "duplicates": {"type": "integer"},
        "rejected": {"type": "integer"},
        "producer": {"type": "string"},
        "received_at": {"type": "string", "format": "date-time"},
        "results": {"type": "array", "items": _RESULT},
    },
}

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}


def json_body(properties: dict[str, Any], required: Sequence[str]) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads a JSON object (routes read bodies raw,
    within bounds, so the schema is stated here rather than derived from a parameter)."""
    schema = {
        "type": "object",
        "required": list(required),
        "properties": properties,
        "additionalProperties": False,
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR_TEXT = {
    400: "Malformed body",
    401: "Missing, unknown or revoked API key",
    403: "The key lacks the role this needs, or the item is outside its scope",
    404: "Not found",
    408: "The body did not arrive in time",
    409: "Incompatible change; every violation listed",
    413: "Body too large",
    422: "Invalid definition or parameters",
    429: "Over the rate limit; see Retry-After",
    503: "A backend is unavailable; retry",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        # 422 also covers FastAPI's own parameter errors, whose body differs from ours.
        schema = {"type": "object"} if code == 422 else _ERROR
        out[code] = _json(schema, _ERROR_TEXT[code])
    return out


PUBLISH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _json(_OUTCOME, "Every event accepted (or already accepted: duplicate)"),
    207: _json(_OUTCOME, "Some events rejected; the others were published"),
    400: _json(_ERROR, "Body is not a JSON array, NDJSON, or valid gzip"),
    401: _json(_ERROR, "Missing, unknown or revoked API key"),
    403: _json(_ERROR, "No producer role, or an event type or surface outside the key's scope"),
    408: _json(_ERROR, "The body did not arrive in time; nothing published"),
    413: _json(_ERROR, "More than 500 events or 1 MB"),
    429: _json(_ERROR, "Over the producer's rate limit; see Retry-After"),
    503: _json(_ERROR, "Bus unavailable; nothing accepted, retry the whole batch"),
    422: _json({"type": "object"}, "Invalid parameters"),
}

CONTRACT_DOCUMENT_SCHEMA: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["team", "event_types"],
                "properties": {"team": {"type": "string"}, "event_types": {"type": "object"}},
            }
        },
    },
}


FEATURES_RESPONSE: dict[str, Any] = _json(
    {
        "type": "object",
        "required": ["user_id", "features", "as_of", "age_s", "stale", "stale_features"],
        "properties": {
            "user_id": {"type": "string"},
            "found": {"type": "boolean"},
            "features": {"type": "object"},
            "as_of": {"type": ["string", "null"], "format": "date-time"},
            "age_s": {"type": ["number", "null"]},
            "stale": {"type": "boolean"},
            "stale_features": {"type": "array", "items": {"type": "string"}},
            "budgets_s": {"type": "object"},
            "batch": {
                "type": "object",
                "description": "The user's batch row: declared batch features by name",
            },
            "batch_as_of": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "Features with as_of, age and staleness",
)

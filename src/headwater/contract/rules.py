"""Rejection reason codes: one code per way an event can fail the contract."""

from __future__ import annotations

__all__ = ["REASONS"]

#: Every reason code a rejection can carry, with what it means.
REASONS: dict[str, str] = {
    "malformed_json": "the event is not valid JSON",
    "not_an_object": "the event is not a JSON object",
    "event_too_large": "the event is larger than the per-event limit",
    "missing_required_field": "a required field is absent",
    "wrong_type": "a field has the wrong JSON type",
    "unknown_event_type": "no contract is registered for this event_type",
    "unknown_field": "a top-level field is not part of the canonical signal",
    "envelope_field_set": "producer, received_at and schema_version are set by headwater",
    "undeclared_payload_field": "the payload holds a field its event type does not declare",
    "surface_not_allowed": "the surface is not allowed for this event type",
    "item_required": "this event type carries an item: item_id is required",
    "item_not_allowed": "this event type declares no item: item_id must be absent or null",
    "invalid_timestamp": "the timestamp is not RFC 3339",
    "timestamp_without_offset": "the timestamp has no UTC offset",
    "timestamp_too_old": "the timestamp is older than the accepted horizon",
    "timestamp_in_future": "the timestamp is too far in the future",
    "out_of_bounds": "a value is outside its declared bounds (length, range, size)",
    "invalid_enum_value": "a value is not one of the enum's declared values",
    "user_erased": "the user was erased; the deployment's policy refuses this event",
    "invalid": "the event does not conform (detail in the message)",
}

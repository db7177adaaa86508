"""The checks of a batch's fast path after msgspec decoded it, in one loop.

Each event's timestamp within the batch's window, none of the envelope's fields
(``producer``, ``received_at``, ``schema_version``, ``request_id``) set by the producer,
and a timestamp given with an offset moved to UTC. Cython compiles this module in
pure-Python mode (``setup.py``): the loop runs without the interpreter's dispatch, and
the same source runs as Python where it is not built.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["accepts"]


def accepts(events: list[Any], oldest: datetime, newest: datetime, unset: Any) -> bool:
    """True when every event passes (its timestamp now in UTC); False at the first that
    does not (the batch then takes the per-event path, which decodes it again)."""
    for event in events:
        ts = event.timestamp
        if not oldest <= ts <= newest:
            return False
        if (
            event.producer is not unset
            or event.received_at is not unset
            or event.schema_version is not unset
            or event.request_id is not unset
        ):
            return False
        if ts.tzinfo is not UTC:
            event.timestamp = ts.astimezone(UTC)
    return True

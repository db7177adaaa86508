"""What the sync and async producer clients share: ids, batching, retry policy, answers."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from headwater._time import format_time
from headwater.errors import (
    AuthenticationError,
    BatchTooLargeError,
    HeadwaterError,
    MalformedBatchError,
    PermissionDeniedError,
    PublishFailedError,
)
from headwater.wire import new_event_id

__all__ = ["PublishReport", "RejectedEvent", "RetryPolicy", "new_event_id"]


class RejectedEvent(msgspec.Struct, frozen=True):
    """An event the contract refused: never retried, reported to the caller."""

    event_id: str | None
    field: str
    rule: str
    message: str
    event: dict[str, Any]


class PublishReport(msgspec.Struct):
    """What happened to everything a publish or flush sent."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[RejectedEvent] = msgspec.field(default_factory=list)
    batches: int = 0
    retries: int = 0

    def merge(self, other: PublishReport) -> None:
        """Add another report's counts to this one."""
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected.extend(other.rejected)
        self.batches += other.batches
        self.retries += other.retries


class RetryPolicy(msgspec.Struct, frozen=True):
    """Retries for 429, 503 and network errors: exponential backoff with full jitter."""

    max_retries: int = 6
    base_s: float = 0.1
    cap_s: float = 10.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (1-based); honours Retry-After."""
        backoff = random.uniform(0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))  # noqa: S311 - jitter
        return max(backoff, retry_after or 0.0)


RETRYABLE = frozenset({429, 502, 503, 504})
_FATAL: dict[int, type[HeadwaterError]] = {
    400: MalformedBatchError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    413: BatchTooLargeError,
}


def fatal_error(status: int, body: bytes) -> HeadwaterError:
    """The error for an answer that must not be retried."""
    try:
        message = str(msgspec.json.decode(body).get("message", ""))
    except (msgspec.DecodeError, AttributeError):
        message = body[:500].decode(errors="replace")
    cls = _FATAL.get(status, PublishFailedError)
    return cls(f"HTTP {status}: {message}")


def report_from(body: bytes, events: Sequence[dict[str, Any]]) -> PublishReport:
    """A report from a 200/207 answer, rejections paired with the events sent."""
    doc = msgspec.json.decode(body)
    rejected = [
        RejectedEvent(
            event_id=r.get("event_id"),
            field=r.get("field", ""),
            rule=r["rule"],
            message=r.get("message", ""),
            event=dict(events[r["index"]]),
        )
        for r in doc["results"]
        if r["status"] == "rejected"
    ]
    return PublishReport(
        accepted=doc["accepted"], duplicates=doc["duplicates"], rejected=rejected, batches=1
    )


def batches(
    events: Sequence[dict[str, Any]],
    max_events: int,
    max_bytes: int,
) -> Iterator[tuple[list[dict[str, Any]], bytes]]:
    """Events split into bodies of at most ``max_events`` events and ``max_bytes`` bytes."""
    current: list[dict[str, Any]] = []
    encoded: list[bytes] = []
    size = 2
    for event in events:
        data = msgspec.json.encode(event)
        if current and (len(current) >= max_events or size + len(data) + 1 > max_bytes):
            yield current, b"[" + b",".join(encoded) + b"]"
            current, encoded, size = [], [], 2
        current.append(event)
        encoded.append(data)
        size += len(data) + 1
    if current:
        yield current, b"[" + b",".join(encoded) + b"]"


def build_event(
    *,
    event_type: str,
    user_id: str,
    surface: str,
    item_id: str | None = None,
    payload: dict[str, Any] | None = None,
    timestamp: datetime | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """One event in the canonical shape, with a fresh event id and the current time."""
    ts = timestamp or datetime.now(UTC)
    if ts.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    event: dict[str, Any] = {
        "event_id": event_id or new_event_id(),
        "event_type": event_type,
        "user_id": user_id,
        "surface": surface,
        "timestamp": format_time(ts),
        "payload": payload or {},
    }
    if item_id is not None:
        event["item_id"] = item_id
    return event


def decide(
    status: int | None,
    body: bytes,
    retry_after: str | None,
    events: Sequence[dict[str, Any]],
    *,
    attempt: int,
    policy: RetryPolicy,
    error: str = "",
) -> PublishReport | float:
    """After one attempt: the report when done, or the seconds to wait before retrying.

    ``status`` is None when the request failed in transit. Raises the matching error
    for answers that must not be retried, and PublishFailedError when retries run out.
    """
    if status in (200, 207):
        return report_from(body, events)
    if status is not None and status not in RETRYABLE:
        raise fatal_error(status, body)
    if attempt > policy.max_retries:
        what = f"HTTP {status}" if status is not None else error or "network error"
        raise PublishFailedError(
            f"gave up after {attempt} attempts ({what}); the batch can be resent safely"
        )
    hint = None
    if retry_after:
        try:
            hint = float(retry_after)
        except ValueError:
            hint = None
    return policy.delay(attempt, hint)

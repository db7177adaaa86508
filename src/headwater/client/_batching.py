"""What the sync and async producer clients share: ids, batching, retry policy, answers."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from headwater._time import format_time
from headwater.wire import new_event_id, read_problem

__all__ = [
    "Delivered",
    "Outcome",
    "PublishReport",
    "Refused",
    "RejectedEvent",
    "RetryPolicy",
    "Split",
    "Transient",
    "classify",
    "new_event_id",
]


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
    """Retries for network errors, 408, 429 and 5xx: exponential backoff with full jitter.

    An explicit ``flush()`` gives up after ``max_retries`` retries of a batch (raising
    with the events, which stay queued); the background sender never gives up: it
    tells ``on_error`` and keeps retrying, at most ``cap_s`` apart (or Retry-After).
    """

    max_retries: int = 6
    base_s: float = 0.1
    cap_s: float = 10.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (1-based); honours Retry-After."""
        # The exponent is bounded: the background sender counts attempts without end.
        ceiling = min(self.cap_s, self.base_s * 2 ** min(attempt - 1, 60))
        backoff = random.uniform(0, ceiling)  # noqa: S311 - jitter
        return max(backoff, retry_after or 0.0)


#: Answers after which the same batch may succeed: the gateway or the path to it is
#: overloaded or down (besides these, every 5xx and a failure in transit).
TRANSIENT = frozenset({408, 429})


class Delivered(msgspec.Struct, frozen=True):
    """200 or 207: every event of the batch is accepted, a duplicate or rejected (final)."""

    report: PublishReport


class Transient(msgspec.Struct, frozen=True):
    """A failure in transit, 408, 429 or 5xx: the batch stays queued and is retried."""

    what: str
    retry_after: float | None


class Refused(msgspec.Struct, frozen=True):
    """401, 403 or another 4xx about the request, not its events: the batch stays queued,
    the caller is told (a key can be fixed or granted the types without losing events).
    ``kind`` is the problem's kind (``forbidden``), ``message`` its detail."""

    status: int
    message: str
    kind: str = ""


class Split(msgspec.Struct, frozen=True):
    """400 or 413 for the whole body: sent again in smaller batches; alone, the event is
    refused for good. ``kind`` is the problem's kind (``too-large``, ``malformed-body``)."""

    status: int
    message: str
    kind: str = ""


Outcome = Delivered | Transient | Refused | Split


def classify(
    status: int | None,
    body: bytes,
    retry_after: str | None,
    events: Sequence[dict[str, Any]],
    error: str = "",
) -> Outcome:
    """What one attempt's answer means for its batch (``status`` None: failed in transit)."""
    if status in (200, 207):
        try:
            return Delivered(report_from(body, events))
        except (msgspec.DecodeError, KeyError, IndexError, TypeError, AttributeError):
            # Not the gateway's answer (a proxy's page?): sending again is safe.
            return Transient(f"HTTP {status} with an unreadable body", None)
    if status is None or status in TRANSIENT or status >= 500:
        what = f"HTTP {status}" if status is not None else error or "network error"
        return Transient(what, _seconds(retry_after))
    problem = read_problem(status, body)
    if status in (400, 413):
        return Split(status, problem.detail, problem.kind)
    return Refused(status, problem.detail, problem.kind)


def _seconds(retry_after: str | None) -> float | None:
    if not retry_after:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        return None  # an HTTP date: the backoff applies


class _Answer(msgspec.Struct):
    """The counts of a 200/207 answer; its results read only when some were rejected."""

    accepted: int
    duplicates: int
    results: msgspec.Raw
    rejected: int | None = None


_ANSWER = msgspec.json.Decoder(_Answer)


def report_from(body: bytes, events: Sequence[dict[str, Any]]) -> PublishReport:
    """A report from a 200/207 answer, rejections paired with the events sent."""
    answer = _ANSWER.decode(body)
    if answer.rejected == 0:  # the gateway says none was: its 500 results need no reading
        return PublishReport(accepted=answer.accepted, duplicates=answer.duplicates, batches=1)
    rejected = [
        RejectedEvent(
            event_id=r.get("event_id"),
            field=r.get("field", ""),
            rule=r["rule"],
            message=r.get("message", ""),
            event=dict(events[r["index"]]),
        )
        for r in msgspec.json.decode(answer.results)
        if r["status"] == "rejected"
    ]
    return PublishReport(
        accepted=answer.accepted, duplicates=answer.duplicates, rejected=rejected, batches=1
    )


def batches(
    events: Sequence[dict[str, Any]],
    max_events: int,
    max_bytes: int,
    encoded_events: Sequence[bytes] | None = None,
) -> Iterator[tuple[list[dict[str, Any]], bytes]]:
    """Events split into bodies of at most ``max_events`` events and ``max_bytes`` bytes;
    ``encoded_events``, when given, is each event's JSON already."""
    current: list[dict[str, Any]] = []
    encoded: list[bytes] = []
    size = 2
    if encoded_events is None:
        encoded_events = [msgspec.json.encode(event) for event in events]
    n = len(encoded_events)
    if n <= max_events and 2 + sum(map(len, encoded_events)) + n <= max_bytes:
        # All in one body (the loop below would make the same one).
        if n:
            yield list(events), b"[" + b",".join(encoded_events) + b"]"
        return
    for event, data in zip(events, encoded_events, strict=True):
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

"""Erasure alerts: a store overdue or failed, a request nearing or past its deadline.

The orchestrator watches each open request's regulatory deadline with
:func:`watch_deadline` (a warning at each fraction of the time to it, an alert once it
passes, naming the stores still outstanding) and sends every alert with
:func:`send_alert`: to the log, the ``headwater_erasure_deadline_alerts_total`` metric
(deadline alerts), an optional callback and an optional webhook.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

import httpx
import msgspec

from headwater.erasure.ledger import ErasureLedger, RequestRecord
from headwater.metrics import ERASURE_DEADLINE_ALERTS

__all__ = ["Alert", "send_alert", "watch_deadline"]

log = logging.getLogger("headwater.erasure")


class Alert(msgspec.Struct, frozen=True):
    """An overdue or failed participant, or a request nearing or past its deadline, as
    sent to the webhook. ``status``: ``overdue``, ``failed``, ``warning`` (a fraction of
    the time to the deadline has passed) or ``deadline_passed``; for the last two,
    ``participant`` lists every store still outstanding, comma-separated."""

    request_id: str
    participant: str
    status: str
    attempts: int
    due_at: str
    deadline: str
    error: str | None
    message: str


def watch_deadline(
    ledger: ErasureLedger,
    record: RequestRecord,
    now: datetime,
    warn_at: Sequence[float],
    send: Callable[[Alert], None],
) -> None:
    """Warn at each fraction of the time to the deadline in ``warn_at``; alert once when
    it passes. The ledger notes each warning and the alert, so neither goes twice."""
    outstanding = [t for t in record.tasks if t.status != "confirmed"]
    if not outstanding:
        return
    received = datetime.fromisoformat(record.received_at)
    deadline = datetime.fromisoformat(record.deadline)
    names = ",".join(t.participant for t in outstanding)

    def alert(status: str, message: str) -> None:
        send(
            Alert(
                request_id=record.request_id,
                participant=names,
                status=status,
                attempts=max(t.attempts for t in outstanding),
                due_at=record.deadline,
                deadline=record.deadline,
                error=None,
                message=f"erasure {record.request_id}: {message} with "
                f"{len(outstanding)} store(s) outstanding: {names}",
            )
        )

    if now >= deadline:
        if record.deadline_alerted_at is not None:
            return
        for t in outstanding:
            if t.status == "pending":
                ledger.mark(record.request_id, t.participant, status="overdue")
        late = (now - deadline).total_seconds()
        alert("deadline_passed", f"deadline {record.deadline} passed {late:.0f}s ago")
        ledger.deadline_alerted(record.request_id, now)
        return
    span = (deadline - received).total_seconds()
    elapsed = (now - received).total_seconds() / span if span > 0 else 1.0
    due = [f for f in warn_at if record.warned_fraction < f <= elapsed]
    if not due:
        return
    left = (deadline - now).total_seconds()
    alert(
        "warning",
        f"{max(due):.0%} of the time to the deadline {record.deadline} has passed "
        f"({left:.0f}s left)",
    )
    ledger.warned(record.request_id, max(due))


def send_alert(
    alert: Alert, *, webhook_url: str | None, on_alert: Callable[[Alert], None] | None
) -> None:
    """Count a deadline alert in its metric, log the alert, pass it to ``on_alert`` and
    post it to ``webhook_url`` (a failed post is logged, not raised)."""
    if alert.status in ("warning", "deadline_passed"):
        ERASURE_DEADLINE_ALERTS.labels(alert.status).inc()
    (log.warning if alert.status == "warning" else log.error)(alert.message)
    if on_alert is not None:
        on_alert(alert)
    if webhook_url:
        try:
            httpx.post(
                webhook_url,
                content=msgspec.json.encode(alert),
                timeout=5.0,
                headers={"Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            log.warning("erasure alert webhook %s failed: %s", webhook_url, exc)

"""The erasure orchestrator: creates requests, chases overdue participants, closes requests.

A request stays open until every participant has confirmed and the independent
verification (``erasure.verify``) found nothing of the user in any store. Two clocks
drive it:

- the **chase interval** of each store (``HEADWATER_ERASURE_CHASE``, or the store's
  own): a store that has not confirmed by then (or whose erasure failed) is marked
  overdue, alerted on, and sent the erasure again, addressed to it alone, with
  exponential backoff;
- the **regulatory deadline** of the request (``HEADWATER_ERASURE_DEADLINE``): a warning
  at each fraction of it in ``HEADWATER_ERASURE_WARN_AT`` (default 50% and 80%) while
  stores are outstanding, and an alert when it passes, naming them.

Alerts go to the log, the ``headwater_erasure_alerts_total`` and
``headwater_erasure_deadline_alerts_total`` metrics and an optional webhook.

The deadline watch and the sending of alerts are in ``erasure.alerts``; closing a
fully confirmed request (its verification, a refusal, the purge of its erasure events)
in ``erasure.completion``; the audit and the regulator's export in ``erasure.audit``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from headwater._time import format_time
from headwater.bus.base import KIND_ERASURE, Bus, Message
from headwater.erasure.alerts import Alert, send_alert, watch_deadline
from headwater.erasure.audit import export_document, request_audit
from headwater.erasure.completion import complete_confirmed, verify_request
from headwater.erasure.events import ErasureEvent, encode_erasure
from headwater.erasure.ledger import (
    REFUSED_METHOD,
    ErasureLedger,
    Participant,
    RequestRecord,
    TaskRecord,
)
from headwater.erasure.legal import check_basis
from headwater.erasure.participant import DEFAULT_CONFIRM_WITHIN_S
from headwater.erasure.subject import SubjectHasher
from headwater.erasure.tombstones import TombstoneFilter
from headwater.erasure.verify import Verifier
from headwater.errors import ErasureError, NoErasureParticipantsError
from headwater.metrics import ERASURE_ALERTS, ERASURE_CONFIRM_SECONDS
from headwater.wire import new_event_id

__all__ = ["DEFAULT_WARN_AT", "READY_POLL_S", "ErasureOrchestrator"]

#: How often, between passes, the orchestrator asks whether a request has every store's
#: confirmation (seconds): one indexed query of the control plane.
READY_POLL_S = 0.1
#: The fractions of the time to the deadline at which outstanding stores are warned about.
DEFAULT_WARN_AT = (0.5, 0.8)
#: A store's states that make its request overdue.
LATE_STATES = ("overdue", "failed")

log = logging.getLogger("headwater.erasure")


class ErasureOrchestrator:
    """Drives erasure requests to completion."""

    def __init__(
        self,
        ledger: ErasureLedger,
        bus: Bus,
        hasher: SubjectHasher,
        *,
        deadline: timedelta = timedelta(days=30),
        retry_base: timedelta = timedelta(seconds=5),
        retry_cap: timedelta = timedelta(hours=1),
        webhook_url: str | None = None,
        on_alert: Callable[[Alert], None] | None = None,
        tombstones: TombstoneFilter | None = None,
        expected: Sequence[str] = (),
        warn_at: Sequence[float] = DEFAULT_WARN_AT,
        chase_after: timedelta | None = None,
        verifier: Verifier | None = None,
        backup_retention: timedelta | None = None,
    ) -> None:
        self.ledger = ledger
        # How long the operator keeps the servers' snapshots and backups (None: unstated).
        self.backup_retention = backup_retention
        # The stores every request waits for even before their consumer first started
        # (the consumer registry's list): a store that has not registered yet is not
        # silently left out of a request.
        self.expected = tuple(expected)
        self.bus = bus
        self.hasher = hasher
        self.deadline = deadline
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.webhook_url = webhook_url
        self.on_alert = on_alert
        self.tombstones = tombstones
        self.warn_at = tuple(sorted(f for f in warn_at if 0 < f < 1))
        self.chase_after = chase_after
        self.verifier = verifier
        self.alerts: list[Alert] = []
        self._seen_confirmed: set[tuple[str, str]] = set()
        self._clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def request(
        self,
        user_id: str,
        *,
        legal_basis: str,
        reference: str | None = None,
        requested_by: str,
        deadline: timedelta | None = None,
    ) -> RequestRecord:
        """Open an erasure request and publish its event on the bus, keyed by the user.

        ``legal_basis`` is one of ``erasure.legal.LEGAL_BASES``; ``requested_by`` names
        the principal that asked (kept in the audit).
        """
        if not user_id or len(user_id) > 128:
            raise ErasureError("user_id must be 1 to 128 characters")
        check_basis(legal_basis, reference)
        participants = self.ledger.participants()
        registered = {p.name for p in participants}
        participants += [
            Participant(name, "not registered yet", DEFAULT_CONFIRM_WITHIN_S)
            for name in self.expected
            if name not in registered
        ]
        if self.chase_after is not None:
            within = self.chase_after.total_seconds()
            participants = [
                msgspec.structs.replace(p, confirm_within_s=within) for p in participants
            ]
        if not participants:
            raise NoErasureParticipantsError(
                "no erasure participants are registered: start the consumers first"
            )
        now = datetime.now(UTC)
        request_id = new_event_id("er_")
        self.ledger.create(
            request_id=request_id,
            subject_hash=self.hasher(user_id),
            user_id=user_id,
            legal_basis=legal_basis,
            reference=reference,
            requested_by=requested_by,
            received_at=now,
            deadline=now + (self.deadline if deadline is None else deadline),
            participants=participants,
        )
        if self.tombstones is not None:
            # This process's gateway refuses the user's late events from now on; other
            # processes learn it from the ledger within their refresh interval.
            self.tombstones.add(user_id, int(now.timestamp() * 1000))
        event = ErasureEvent(request_id=request_id, user_id=user_id, requested_at=now)
        # Keyed by the user: the same partition as the user's signals, after them.
        self.bus.publish([Message(user_id, encode_erasure(event), KIND_ERASURE)])
        log.info("erasure %s opened for %d participants", request_id, len(participants))
        return self.ledger.get(request_id)

    def tick(self, now: datetime | None = None) -> dict[str, int]:
        """One pass over open requests: close, mark overdue, alert, resend."""
        now = now or datetime.now(UTC)
        # The pass's clock: ``now`` plus the time the pass has taken (the verification of
        # many stores takes seconds under load), so that a request's completion time is
        # when it completed, not when the pass began.
        started = time.monotonic()
        self._clock = lambda: now + timedelta(seconds=time.monotonic() - started)
        resent = 0
        # Every open request in two queries (a burst leaves thousands open at once).
        records = self.ledger.open_requests(limit=10_000)
        ready = []
        for record in records:
            self._observe_confirmations(record)
            if all(t.status == "confirmed" for t in record.tasks):
                ready.append(record)
        # Verified together: each store is read once for every request ready now.
        completed = complete_confirmed(
            ready,
            now,
            ledger=self.ledger,
            bus=self.bus,
            verifier=self.verifier,
            clock=self._clock,
        )
        done = len(completed)
        refused = {r.request_id for r in ready} - completed
        for found in records:
            if found.request_id in completed:
                continue
            # A store the verification refused is no longer confirmed: read it again.
            record = self.ledger.get(found.request_id) if found.request_id in refused else found
            watch_deadline(self.ledger, record, now, self.warn_at, self._send)
            if any(self._overdue(t, now) for t in record.tasks):
                # Chasing writes task states: decide on a fresh read, as one by one.
                resent += self._chase(self.ledger.get(record.request_id), now)
        if done:
            # The completed requests' sealed ids, wiped: their old row versions go too.
            self.ledger.scrub()
        counts = self.ledger.counts()
        return {"completed": done, "resent": resent, **counts}

    def _observe_confirmations(self, record: RequestRecord) -> None:
        received = datetime.fromisoformat(record.received_at)
        for t in record.tasks:
            key = (record.request_id, t.participant)
            if t.status == "confirmed" and t.confirmed_at and key not in self._seen_confirmed:
                self._seen_confirmed.add(key)
                took = (datetime.fromisoformat(t.confirmed_at) - received).total_seconds()
                ERASURE_CONFIRM_SECONDS.labels(t.participant).observe(max(0.0, took))

    @staticmethod
    def _overdue(task: TaskRecord, now: datetime) -> bool:
        return task.status != "confirmed" and (
            now >= datetime.fromisoformat(task.due_at) or task.status == "failed"
        )

    def _chase(self, record: RequestRecord, now: datetime) -> int:
        resent = 0
        for task in record.tasks:
            if not self._overdue(task, now):
                continue
            retry_at = datetime.fromisoformat(task.next_retry_at) if task.next_retry_at else now
            if now < retry_at:
                continue
            attempts = task.attempts + 1
            backoff = min(self.retry_cap, self.retry_base * 2 ** min(max(attempts - 2, 0), 30))
            self.ledger.mark(
                record.request_id,
                task.participant,
                status="overdue",
                attempts=attempts,
                next_retry_at=format_time(now + backoff),
                alerted_at=format_time(now),
            )
            self._alert(
                record,
                task.participant,
                task.status,
                attempts=attempts,
                due_at=task.due_at,
                error=task.error,
            )
            if record.user_id is None:
                raise ErasureError(f"request {record.request_id} lost its subject id while open")
            event = ErasureEvent(
                request_id=record.request_id,
                user_id=record.user_id,
                requested_at=datetime.fromisoformat(record.received_at),
                attempt=attempts,
                participants=(task.participant,),
                # Refused by the verification: the store's own search found nothing (it
                # searches only what it still knows), so it must rebuild its files.
                rebuild=task.method == REFUSED_METHOD,
            )
            self.bus.publish([Message(record.user_id, encode_erasure(event), KIND_ERASURE)])
            resent += 1
        return resent

    def _alert(
        self,
        record: RequestRecord,
        participant: str,
        status: str,
        *,
        attempts: int,
        due_at: str,
        error: str | None,
    ) -> None:
        alert = Alert(
            request_id=record.request_id,
            participant=participant,
            status="failed" if status == "failed" else "overdue",
            attempts=attempts,
            due_at=due_at,
            deadline=record.deadline,
            error=error,
            message=f"erasure {record.request_id}: {participant} has not confirmed "
            f"(due {due_at}); sending again, attempt {attempts}",
        )
        ERASURE_ALERTS.labels(participant).inc()
        self._send(alert)

    def _send(self, alert: Alert) -> None:
        self.alerts.append(alert)
        send_alert(alert, webhook_url=self.webhook_url, on_alert=self.on_alert)

    def run(
        self, stop: threading.Event, *, interval_s: float = 1.0, poll_s: float = READY_POLL_S
    ) -> None:
        """Tick until ``stop`` is set: every ``interval_s``, and, between those, as soon as
        a request has every store's confirmation (asked every ``poll_s``), so that its
        verification and completion do not wait for the next full pass."""
        last = time.monotonic()
        failed = False
        while not stop.wait(min(poll_s, interval_s)):
            try:
                # After a failed pass, the next one waits for the interval (no tight loop
                # on a request that fails every pass).
                due = time.monotonic() - last >= interval_s
                if not due and (failed or not self.ledger.any_fully_confirmed()):
                    continue
                last = time.monotonic()
                failed = False
                self.tick()
            except Exception:  # keep chasing: one bad pass must not stop erasures
                failed = True
                log.exception("erasure orchestrator pass failed")

    def overdue(self, limit: int = 100, now: datetime | None = None) -> list[dict[str, Any]]:
        """The audits of open requests (newest first) past their deadline or with a
        store overdue or failed: what ``GET /v1/deletions?status=overdue`` lists."""
        now = now or datetime.now(UTC)
        out: list[dict[str, Any]] = []
        # The ledger picks them in one query; each audit reads its request again, and one
        # no longer late by then (its late store confirmed meanwhile) is left out.
        for request_id in self.ledger.late_request_ids(now, LATE_STATES, limit=limit):
            audit = self.audit(request_id, now)
            stores = audit["stores"]
            if audit["past_deadline"] or any(s["status"] in LATE_STATES for s in stores):
                out.append(audit)
        return out

    def audit(self, request_id: str, now: datetime | None = None) -> dict[str, Any]:
        """The regulator's answer: the request and one row per store, never one pass/fail
        (``erasure.audit.request_audit``)."""
        return request_audit(self.ledger, request_id, warn_at=self.warn_at, now=now)

    def verify(self, request_id: str) -> dict[str, Any]:
        """Run the independent verification of an open request now (nothing changes in
        the ledger); a completed request answers with the findings recorded before it
        completed, its raw id having been wiped since (``erasure.completion.verify_request``)."""
        return verify_request(self.ledger, self.verifier, request_id)

    def export(self, request_id: str, now: datetime | None = None) -> dict[str, Any]:
        """One document per request for a regulator: the request, every store with its
        method, the evidence of the attempt that applied the erasure, the independent
        verification and every attempt, and what cannot be erased at once, with the
        date it will be gone (``erasure.audit.export_document``)."""
        return export_document(
            self.audit(request_id, now), backup_retention=self.backup_retention, now=now
        )

"""The erasure orchestrator: creates requests, chases overdue participants, closes requests.

A request stays open until every participant has confirmed. A participant past its
confirmation deadline (or whose erasure failed) is marked overdue, alerted on (log,
metric and an optional webhook), and sent the erasure again, addressed to it alone,
with exponential backoff.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec

from headwater._time import format_time
from headwater.bus.base import KIND_ERASURE, Bus, Message, Record
from headwater.erasure.events import ErasureEvent, decode_erasure, encode_erasure
from headwater.erasure.ledger import ErasureLedger, Participant, RequestRecord, TaskRecord
from headwater.erasure.legal import LEGAL_BASES, check_basis
from headwater.erasure.participant import DEFAULT_CONFIRM_WITHIN_S
from headwater.erasure.subject import SubjectHasher
from headwater.erasure.tombstones import TombstoneFilter
from headwater.errors import ErasureError, NoErasureParticipantsError
from headwater.metrics import ERASURE_ALERTS, ERASURE_CONFIRM_SECONDS
from headwater.wire import new_event_id

__all__ = ["Alert", "ErasureOrchestrator"]

log = logging.getLogger("headwater.erasure")


class Alert(msgspec.Struct, frozen=True):
    """An overdue or failed participant, as sent to the webhook."""

    request_id: str
    participant: str
    status: str
    attempts: int
    due_at: str
    deadline: str
    error: str | None
    message: str


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
    ) -> None:
        self.ledger = ledger
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
        self.alerts: list[Alert] = []
        self._seen_confirmed: set[tuple[str, str]] = set()

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
            deadline=now + (deadline or self.deadline),
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
        done = resent = 0
        # Every open request in two queries (a burst leaves thousands open at once).
        for record in self.ledger.open_requests(limit=10_000):
            self._observe_confirmations(record)
            if all(t.status == "confirmed" for t in record.tasks):
                self._complete(record)
                done += 1
                continue
            if any(self._overdue(t, now) for t in record.tasks):
                # Chasing writes task states: decide on a fresh read, as one by one.
                resent += self._chase(self.ledger.get(record.request_id), now)
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
            backoff = min(self.retry_cap, self.retry_base * 2 ** (attempts - 2))
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
        self.alerts.append(alert)
        ERASURE_ALERTS.labels(participant).inc()
        log.error(alert.message)
        if self.on_alert is not None:
            self.on_alert(alert)
        if self.webhook_url:
            try:
                httpx.post(
                    self.webhook_url,
                    content=msgspec.json.encode(alert),
                    timeout=5.0,
                    headers={"Content-Type": "application/json"},
                )
            except httpx.HTTPError as exc:
                log.warning("erasure alert webhook %s failed: %s", self.webhook_url, exc)

    def _complete(self, record: RequestRecord) -> None:
        user_id = record.user_id
        self.ledger.complete(record.request_id)
        if user_id is not None and self.bus.erasure_capability().can_purge:
            # The erasure events named the user too: gone once every store confirmed.
            request_id = record.request_id

            def ours(r: Record) -> bool:
                return r.kind == KIND_ERASURE and decode_erasure(r.value).request_id == request_id

            # They were appended after the request arrived: where the bus can, look at
            # that recent stretch of the log only (a few seconds of slack for the clock),
            # and at all of it only if nothing was found there.
            since_ms = int(datetime.fromisoformat(record.received_at).timestamp() * 1000) - 5_000
            if not self.bus.purge_recent(user_id, since_ms, ours):
                self.bus.purge_key(user_id, ours)
        log.info("erasure %s completed", record.request_id)

    def run(self, stop: threading.Event, *, interval_s: float = 1.0) -> None:
        """Tick until ``stop`` is set."""
        while not stop.wait(interval_s):
            try:
                self.tick()
            except Exception:  # keep chasing: one bad pass must not stop erasures
                log.exception("erasure orchestrator pass failed")

    def audit(self, request_id: str, now: datetime | None = None) -> dict[str, Any]:
        """The regulator's answer: the request and one row per store, never one pass/fail."""
        record = self.ledger.get(request_id)
        attempts = self.ledger.attempts(request_id)
        now = now or datetime.now(UTC)
        deadline = datetime.fromisoformat(record.deadline)
        return {
            "request_id": record.request_id,
            "subject_hash": record.subject_hash,
            "status": record.status,
            "legal_basis": record.legal_basis,
            "legal_basis_text": LEGAL_BASES.get(record.legal_basis, "recorded before the list"),
            "reference": record.reference,
            "requested_by": record.requested_by,
            "received_at": record.received_at,
            "deadline": record.deadline,
            "time_remaining_s": None
            if record.status == "completed"
            else round((deadline - now).total_seconds(), 1),
            "past_deadline": record.status != "completed" and now > deadline,
            "completed_at": record.completed_at,
            "confirmed": sum(t.status == "confirmed" for t in record.tasks),
            "outstanding": sum(t.status != "confirmed" for t in record.tasks),
            "stores": [
                {
                    **msgspec.to_builtins(t),
                    "history": msgspec.to_builtins(attempts.get(t.participant, [])),
                }
                for t in record.tasks
            ],
        }

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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec

from headwater._time import format_time, parse_time
from headwater.bus.base import KIND_ERASURE, Bus, Message, Record
from headwater.erasure.events import Confirmation, ErasureEvent, decode_erasure, encode_erasure
from headwater.erasure.ledger import (
    REFUSED_METHOD,
    ErasureLedger,
    Participant,
    RequestRecord,
    TaskRecord,
)
from headwater.erasure.legal import LEGAL_BASES, check_basis
from headwater.erasure.participant import DEFAULT_CONFIRM_WITHIN_S
from headwater.erasure.subject import SubjectHasher
from headwater.erasure.tombstones import TombstoneFilter
from headwater.erasure.verify import Finding, Subject, Verifier
from headwater.errors import ErasureError, NoErasureParticipantsError
from headwater.metrics import ERASURE_ALERTS, ERASURE_CONFIRM_SECONDS, ERASURE_DEADLINE_ALERTS
from headwater.wire import new_event_id

__all__ = ["DEFAULT_WARN_AT", "READY_POLL_S", "Alert", "ErasureOrchestrator"]

#: How often, between passes, the orchestrator asks whether a request has every store's
#: confirmation (seconds): one indexed query of the control plane.
READY_POLL_S = 0.1
#: The fractions of the time to the deadline at which outstanding stores are warned about.
DEFAULT_WARN_AT = (0.5, 0.8)
#: A store's states that make its request overdue.
LATE_STATES = ("overdue", "failed")

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
        completed = self._complete(ready, now)
        done = len(completed)
        refused = {r.request_id for r in ready} - completed
        for found in records:
            if found.request_id in completed:
                continue
            # A store the verification refused is no longer confirmed: read it again.
            record = self.ledger.get(found.request_id) if found.request_id in refused else found
            self._watch_deadline(record, now)
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

    def _watch_deadline(self, record: RequestRecord, now: datetime) -> None:
        """Warn at each fraction of the time to the deadline; alert once when it passes."""
        outstanding = [t for t in record.tasks if t.status != "confirmed"]
        if not outstanding:
            return
        received = datetime.fromisoformat(record.received_at)
        deadline = datetime.fromisoformat(record.deadline)
        names = ",".join(t.participant for t in outstanding)

        def alert(status: str, message: str) -> None:
            self._send(
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
                    self.ledger.mark(record.request_id, t.participant, status="overdue")
            late = (now - deadline).total_seconds()
            alert("deadline_passed", f"deadline {record.deadline} passed {late:.0f}s ago")
            self.ledger.deadline_alerted(record.request_id, now)
            return
        span = (deadline - received).total_seconds()
        elapsed = (now - received).total_seconds() / span if span > 0 else 1.0
        due = [f for f in self.warn_at if record.warned_fraction < f <= elapsed]
        if not due:
            return
        left = (deadline - now).total_seconds()
        alert(
            "warning",
            f"{max(due):.0%} of the time to the deadline {record.deadline} has passed "
            f"({left:.0f}s left)",
        )
        self.ledger.warned(record.request_id, max(due))

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
        if alert.status in ("warning", "deadline_passed"):
            ERASURE_DEADLINE_ALERTS.labels(alert.status).inc()
        (log.warning if alert.status == "warning" else log.error)(alert.message)
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

    def _complete(self, records: Sequence[RequestRecord], now: datetime) -> set[str]:
        """Verify every store of these fully confirmed requests, then close those with no
        residue; the ids of the requests closed."""
        for record in records:
            if record.user_id is None:
                raise ErasureError(f"request {record.request_id} lost its subject id while open")
        findings: list[dict[str, Finding]] = [{} for _ in records]
        if self.verifier is not None and records:
            findings = self.verifier.verify_many(
                [
                    (self._subject(r, ids), [t.participant for t in r.tasks])
                    for r, ids in zip(records, self._event_ids(records), strict=True)
                ]
            )
        clean: list[tuple[RequestRecord, dict[str, Finding]]] = []
        for record, found in zip(records, findings, strict=True):
            dirty = [f for f in found.values() if f.residue]
            if dirty:
                self._refuse(record, dirty, now)
            else:
                clean.append((record, found))
        if clean and self.bus.erasure_capability().can_purge:
            self._purge_erasure_events([record for record, _ in clean])
        for record, found in clean:
            self._close(record, found)
        return {record.request_id for record, _ in clean}

    def _event_ids(self, records: Sequence[RequestRecord]) -> list[tuple[str, ...]]:
        found = self.ledger.event_ids([r.request_id for r in records])
        return [found.get(r.request_id, ()) for r in records]

    @staticmethod
    def _subject(record: RequestRecord, event_ids: Sequence[str]) -> Subject:
        return Subject(str(record.user_id), record.subject_hash, tuple(event_ids))

    def _close(self, record: RequestRecord, findings: dict[str, Finding]) -> None:
        verification = (
            {name: msgspec.to_builtins(f) for name, f in findings.items()}
            if self.verifier is not None
            else None
        )
        self.ledger.complete(record.request_id, self._clock(), verification=verification)
        log.info("erasure %s completed", record.request_id)

    def _refuse(self, record: RequestRecord, dirty: list[Finding], now: datetime) -> None:
        stores = {t.participant: t.store for t in record.tasks}
        for finding in dirty:
            log.error(
                "erasure %s: %s confirmed, but verification found %s occurrence(s) of the "
                "user (%s); sending it again",
                record.request_id,
                finding.participant,
                finding.residue,
                finding.method,
            )
            self.ledger.refuse(
                Confirmation(
                    request_id=record.request_id,
                    participant=finding.participant,
                    store=stores.get(finding.participant) or "",
                    method=REFUSED_METHOD,
                    rows_removed=0,
                    rows_remaining=finding.residue,
                    verified_at=now,
                    ok=False,
                    error=f"verification found {finding.residue} occurrence(s) of the user",
                    evidence=msgspec.to_builtins(finding),
                )
            )

    def _purge_erasure_events(self, records: Sequence[RequestRecord]) -> None:
        """The erasure events of these requests named their users too: gone once every
        store confirmed. One purge for all the requests a pass closes (each partition
        scanned once, the log checkpointed once), not one per request."""
        requests: dict[str, set[str]] = {}
        for record in records:
            requests.setdefault(str(record.user_id), set()).add(record.request_id)

        def ours(ids: set[str]) -> Callable[[Record], bool]:
            return lambda r: r.kind == KIND_ERASURE and decode_erasure(r.value).request_id in ids

        wheres: dict[str, Callable[[Record], bool] | None] = {
            user: ours(ids) for user, ids in requests.items()
        }
        # They were appended after the requests arrived: where the bus can, look at
        # that recent stretch of the log only (a few seconds of slack for the clock),
        # and at all of it only for a user whose events were not found there.
        since_ms = (
            min(int(datetime.fromisoformat(r.received_at).timestamp() * 1000) for r in records)
            - 5_000
        )
        removed = self.bus.purge_recent(wheres, since_ms)
        missed = {user: where for user, where in wheres.items() if not (removed or {}).get(user)}
        if missed:
            self.bus.purge_keys(missed)

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
        """The regulator's answer: the request and one row per store, never one pass/fail."""
        record = self.ledger.get(request_id)
        attempts = self.ledger.attempts(request_id)
        now = now or datetime.now(UTC)
        deadline = datetime.fromisoformat(record.deadline)
        finished = datetime.fromisoformat(record.completed_at) if record.completed_at else None
        late_by = ((finished or now) - deadline).total_seconds()
        verification = record.verification or {}
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
            "past_deadline": late_by > 0,
            "completed_at": record.completed_at,
            "completed_late": finished is not None and late_by > 0,
            "late_by_s": round(late_by, 1) if late_by > 0 else None,
            "deadline_warnings": [f for f in self.warn_at if f <= record.warned_fraction],
            "deadline_alerted_at": record.deadline_alerted_at,
            "verified_at": record.verified_at,
            "confirmed": sum(t.status == "confirmed" for t in record.tasks),
            "outstanding": sum(t.status != "confirmed" for t in record.tasks),
            "stores": [
                {
                    **msgspec.to_builtins(t),
                    "verification": verification.get(t.participant),
                    "history": msgspec.to_builtins(attempts.get(t.participant, [])),
                }
                for t in record.tasks
            ],
        }

    def verify(self, request_id: str) -> dict[str, Any]:
        """Run the independent verification of an open request now (nothing changes in
        the ledger); a completed request answers with the findings recorded before it
        completed, its raw id having been wiped since."""
        record = self.ledger.get(request_id)
        if record.user_id is None:
            return {
                "request_id": request_id,
                "status": record.status,
                "verified_at": record.verified_at,
                "findings": record.verification,
                "note": "completed: the raw user id was wiped; these are the findings "
                "recorded before completion",
            }
        if self.verifier is None:
            raise ErasureError("no verifier is configured for this deployment")
        findings = self.verifier.verify_many(
            [
                (
                    self._subject(record, self._event_ids([record])[0]),
                    [t.participant for t in record.tasks],
                )
            ]
        )[0]
        return {
            "request_id": request_id,
            "status": record.status,
            "verified_at": format_time(datetime.now(UTC)),
            "findings": {name: msgspec.to_builtins(f) for name, f in findings.items()},
            "clean": all(not f.residue for f in findings.values()),
        }

    def _backups_gone_by(self, confirmed_at: str | None) -> str:
        if self.backup_retention is None or confirmed_at is None:
            return (
                "the next snapshot or AOF rewrite, and the end of the operator's backup "
                "retention (not stated: set HEADWATER_BACKUP_RETENTION)"
            )
        return format_time(parse_time(confirmed_at) + self.backup_retention)

    def export(self, request_id: str, now: datetime | None = None) -> dict[str, Any]:
        """One document per request for a regulator: the request, every store with its
        method, the evidence of the attempt that applied the erasure, the independent
        verification and every attempt, and what cannot be erased at once, with the
        date it will be gone."""
        audit = self.audit(request_id, now)
        stores = []
        pending: list[dict[str, Any]] = []
        for s in audit["stores"]:
            evidence = s["evidence"] or {}
            stores.append(
                {
                    "store": s["participant"],
                    "location": s["store"],
                    "status": s["status"],
                    "method": s["method"],
                    "confirmed_at": s["confirmed_at"],
                    "rows_removed": s["rows_removed"],
                    "rows_remaining": s["rows_remaining"],
                    "evidence": evidence,
                    "verification": s["verification"],
                    "attempts": s["history"],
                }
            )
            if evidence.get("gone_by"):
                pending.append(
                    {
                        "store": s["participant"],
                        "what": "records in the log, unreadable to every consumer (tombstone)",
                        "gone_by": evidence["gone_by"],
                    }
                )
            server = evidence.get("server_copies")
            if isinstance(server, dict):
                pending.append(
                    {
                        "store": s["participant"],
                        "what": server.get("what"),
                        "gone_by": server.get("gone_by")
                        or "not stated: set HEADWATER_BACKUP_RETENTION to the servers' "
                        "backup retention",
                    }
                )
            scrub = evidence.get("scrub") or evidence.get("online_scrub") or {}
            persistence = (
                str(scrub.get("server_persistence", "")) if isinstance(scrub, dict) else ""
            )
            if persistence.startswith(("rdb", "unknown")):
                # A server whose settings could not be read may keep snapshots too.
                pending.append(
                    {
                        "store": s["participant"],
                        "what": "Redis snapshots or append-only file written before the erasure"
                        + (
                            ""
                            if persistence.startswith("rdb")
                            else ", if the server keeps them "
                            "(its persistence settings could not be read)"
                        ),
                        "gone_by": self._backups_gone_by(s["confirmed_at"]),
                    }
                )
        return {
            "document": "headwater erasure record",
            "format_version": 1,
            "generated_at": format_time(now or datetime.now(UTC)),
            "request": {
                k: audit[k]
                for k in (
                    "request_id",
                    "subject_hash",
                    "legal_basis",
                    "legal_basis_text",
                    "reference",
                    "requested_by",
                    "received_at",
                    "deadline",
                    "status",
                    "completed_at",
                    "completed_late",
                    "late_by_s",
                    "deadline_warnings",
                    "deadline_alerted_at",
                    "verified_at",
                )
            },
            "subject": "named by its keyed hash (HMAC-SHA-256); the raw id is not kept once "
            "the request completes",
            "stores": stores,
            "not_erasable_at_once": pending,
        }

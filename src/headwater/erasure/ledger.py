"""The erasure ledger: requests, participants, per-participant tasks, tombstones.

Kept in the control plane (SQLite or PostgreSQL). The raw user id is kept only while
a request is open (retries and the verification need it), sealed (encrypted, see
``SubjectSealer``) so no version of the row ever holds it in clear, and wiped when
the request completes; from then on the audit names the user by its keyed hash only.
The ids of the user's events that a store reported before erasing them are kept the
same way (sealed, wiped at completion) for the verification to search for
(``erasure.event_ids``). The tables and their records are in ``erasure.records``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from headwater._time import format_time, now_text, parse_time
from headwater.control.base import ControlDatabase, ControlTransaction
from headwater.erasure.attempts import SCHEMA as ATTEMPTS_SCHEMA
from headwater.erasure.attempts import Attempt, attempts_of, record_attempt
from headwater.erasure.event_ids import add_event_ids, read_event_ids
from headwater.erasure.events import Confirmation
from headwater.erasure.records import (
    REQUEST_COLUMNS,
    REQUEST_EXTRA_COLUMNS,
    SCHEMA,
    TASK_COLUMNS,
    ErasureBacklog,
    Participant,
    RequestRecord,
    TaskRecord,
    request_from_row,
    task_from_row,
)
from headwater.erasure.subject import SubjectSealer
from headwater.erasure.tombstone_log import (
    TOMBSTONE_COLUMNS,
    TOMBSTONE_SCHEMA,
    read_tombstones,
    write_tombstone,
)
from headwater.errors import UnknownErasureRequestError

__all__ = ["ErasureLedger", "Participant", "RequestRecord", "TaskRecord"]

#: The tables that hold a raw user id or a user's records while a request is open.
SCRUBBED_TABLES = ("hw_erasure_requests",)
#: A task's method once the independent verification refused its confirmation.
REFUSED_METHOD = "verification"


def _now() -> str:
    return now_text()


class ErasureLedger:
    """Durable state of every erasure request."""

    def __init__(self, db: ControlDatabase, sealer: SubjectSealer) -> None:
        self._db = db
        self._sealer = sealer
        db.ensure_schema(SCHEMA)
        db.ensure_schema(ATTEMPTS_SCHEMA)
        db.ensure_columns("hw_erasure_requests", REQUEST_EXTRA_COLUMNS)
        db.ensure_columns("hw_tombstones", TOMBSTONE_COLUMNS)
        db.ensure_schema(TOMBSTONE_SCHEMA)

    # -- participants -------------------------------------------------------------------

    def register_participant(self, participant: Participant) -> None:
        """Declare a store that erasure must reach (idempotent; updates its deadline)."""
        self._db.execute(
            "INSERT INTO hw_erasure_participants VALUES (?, ?, ?, ?, 1) "
            "ON CONFLICT (name) DO UPDATE SET store = excluded.store, "
            "confirm_within_s = excluded.confirm_within_s, active = 1",
            (participant.name, participant.store, participant.confirm_within_s, _now()),
        )

    def retire_participant(self, name: str) -> None:
        """A store no longer fed: new requests stop waiting for it."""
        self._db.execute("UPDATE hw_erasure_participants SET active = 0 WHERE name = ?", (name,))

    def participants(self) -> list[Participant]:
        """Active participants."""
        rows = self._db.execute(
            "SELECT name, store, confirm_within_s FROM "
            "hw_erasure_participants WHERE active = 1 ORDER BY name"
        )
        return [Participant(str(n), str(s), float(c)) for n, s, c in rows]

    # -- requests -----------------------------------------------------------------------

    def create(
        self,
        *,
        request_id: str,
        subject_hash: str,
        user_id: str,
        legal_basis: str,
        received_at: datetime,
        deadline: datetime,
        participants: Sequence[Participant],
        reference: str | None = None,
        requested_by: str = "",
    ) -> None:
        """A new open request with one pending task per participant, and the tombstone."""
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO hw_erasure_requests (request_id, subject_hash, user_id, reason, "
                "received_at, deadline, status, completed_at, reference, requested_by) "
                "VALUES (?, ?, ?, ?, ?, ?, 'open', NULL, ?, ?)",
                (
                    request_id,
                    subject_hash,
                    self._sealer.seal(user_id, request_id),
                    legal_basis,
                    format_time(received_at),
                    format_time(deadline),
                    reference,
                    requested_by,
                ),
            )
            for p in participants:
                # A store is chased at its own pace, but never later than the deadline.
                due = min(
                    datetime.fromtimestamp(received_at.timestamp() + p.confirm_within_s, UTC),
                    deadline,
                )
                tx.execute(
                    "INSERT INTO hw_erasure_tasks (request_id, participant, status, attempts, "
                    "due_at) VALUES (?, ?, 'pending', 1, ?)",
                    (request_id, p.name, format_time(due)),
                )
            ms = int(received_at.timestamp() * 1000)
            write_tombstone(tx, subject_hash, ms, request_id)

    def confirm(self, c: Confirmation) -> bool:
        """Record a participant's confirmation (or failure); False if the task is unknown.

        Every call is an attempt in the store's history; the task keeps the confirmation
        that applied the erasure, which no later attempt replaces.
        """
        status = "confirmed" if c.ok and not c.rows_remaining else "failed"
        with self._db.transaction() as tx:
            rows = tx.execute(
                "SELECT status FROM hw_erasure_tasks WHERE request_id = ? AND participant = ?",
                (c.request_id, c.participant),
            )
            if not rows:
                return False
            if rows[0][0] == "confirmed":
                # Already applied: a retry that found nothing, or failed, is history only.
                record_attempt(tx, c, "repeated" if status == "confirmed" else "failed")
                return True
            record_attempt(tx, c, "applied" if status == "confirmed" else "failed")
            if c.event_ids:
                add_event_ids(tx, self._sealer, c.request_id, c.event_ids)
            tx.execute(
                "UPDATE hw_erasure_tasks SET status = ?, confirmed_at = ?, store = ?, "
                "method = ?, rows_removed = ?, rows_remaining = ?, evidence = ?, error = ?, "
                "next_retry_at = CASE WHEN ? = 'confirmed' THEN NULL ELSE next_retry_at END "
                "WHERE request_id = ? AND participant = ?",
                (
                    status,
                    format_time(c.verified_at) if status == "confirmed" else None,
                    c.store,
                    c.method,
                    c.rows_removed,
                    c.rows_remaining,
                    json.dumps(c.evidence, default=str),
                    c.error or None,
                    status,
                    c.request_id,
                    c.participant,
                ),
            )
        return True

    def event_ids(self, request_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """The event ids the stores reported for each open request (opened), for the
        verification; a completed request has none any more."""
        return read_event_ids(self._db, self._sealer, request_ids)

    def attempts(self, request_id: str) -> dict[str, list[Attempt]]:
        """Each store's attempts at a request, in order (the audit's history)."""
        with self._db.transaction() as tx:
            return attempts_of(tx, request_id)

    def get(self, request_id: str) -> RequestRecord:
        """One request with its tasks."""
        rows = self._db.execute(
            f"SELECT {REQUEST_COLUMNS} FROM hw_erasure_requests WHERE request_id = ?",
            (request_id,),
        )
        if not rows:
            raise UnknownErasureRequestError(f"no erasure request {request_id!r}")
        tasks = [
            task_from_row(r)
            for r in self._db.execute(
                f"SELECT {TASK_COLUMNS} FROM hw_erasure_tasks WHERE request_id = ? "
                "ORDER BY participant",
                (request_id,),
            )
        ]
        return self._request(rows[0], tasks)

    def _request(self, row: Sequence[Any], tasks: list[TaskRecord]) -> RequestRecord:
        stored = row[2]
        user_id = None if stored is None else self._sealer.open(str(stored), str(row[0]))
        return request_from_row(row, tasks, user_id)

    def open_requests(self, *, limit: int = 10_000) -> list[RequestRecord]:
        """Open requests with their tasks, newest first: two queries, not two per request."""
        with self._db.transaction() as tx:
            rows = tx.execute(
                f"SELECT {REQUEST_COLUMNS} FROM hw_erasure_requests WHERE status = 'open' "
                "ORDER BY received_at DESC LIMIT ?",
                (limit,),
            )
            task_rows = tx.execute(
                f"SELECT request_id, {TASK_COLUMNS} FROM hw_erasure_tasks WHERE request_id "
                "IN (SELECT request_id FROM hw_erasure_requests WHERE status = 'open') "
                "ORDER BY participant"
            )
        tasks: dict[str, list[TaskRecord]] = {}
        for row in task_rows:
            tasks.setdefault(str(row[0]), []).append(task_from_row(row[1:]))
        return [self._request(row, tasks.get(str(row[0]), [])) for row in rows]

    def any_fully_confirmed(self) -> bool:
        """Whether an open request has every store's confirmation (one indexed query: the
        orchestrator asks it often, to verify and close such a request without waiting
        for its next full pass)."""
        rows = self._db.execute(
            "SELECT 1 FROM hw_erasure_requests r WHERE r.status = 'open' AND NOT EXISTS "
            "(SELECT 1 FROM hw_erasure_tasks t WHERE t.request_id = r.request_id "
            "AND t.status <> 'confirmed') LIMIT 1"
        )
        return bool(rows)

    def request_ids(self, *, status: str | None = None, limit: int = 1000) -> list[str]:
        """Request ids, newest first, optionally of one status."""
        if status is None:
            rows = self._db.execute(
                "SELECT request_id FROM hw_erasure_requests ORDER BY received_at DESC LIMIT ?",
                (limit,),
            )
        else:
            rows = self._db.execute(
                "SELECT request_id FROM hw_erasure_requests WHERE "
                "status = ? ORDER BY received_at DESC LIMIT ?",
                (status, limit),
            )
        return [str(r[0]) for r in rows]

    def late_request_ids(
        self, now: datetime, states: Sequence[str], *, limit: int = 1000
    ) -> list[str]:
        """Open requests, newest first, whose deadline has passed at ``now`` or with a
        task in one of ``states``: one query, however many requests are open."""
        # A deadline is stored to the millisecond: it has passed when it is at or before
        # ``now`` less a microsecond, truncated to the millisecond as it is printed.
        passed = format_time(now - timedelta(microseconds=1))
        late = f"t.status IN ({', '.join('?' * len(states))})" if states else "1 = 0"
        rows = self._db.execute(
            "SELECT r.request_id FROM hw_erasure_requests r WHERE r.status = 'open' AND "
            "(r.deadline <= ? OR EXISTS (SELECT 1 FROM hw_erasure_tasks t "
            f"WHERE t.request_id = r.request_id AND {late})) "
            "ORDER BY r.received_at DESC LIMIT ?",
            (passed, *states, limit),
        )
        return [str(r[0]) for r in rows]

    def counts(self) -> dict[str, int]:
        """Requests per status, and open requests with an overdue task."""
        out = {
            str(s): int(n)
            for s, n in self._db.execute(
                "SELECT status, COUNT(*) FROM hw_erasure_requests GROUP BY status"
            )
        }
        overdue = self._db.execute(
            "SELECT COUNT(DISTINCT request_id) FROM hw_erasure_tasks WHERE status = 'overdue'"
        )
        out["overdue"] = int(overdue[0][0])
        return out

    def backlog(self, now: datetime | None = None) -> ErasureBacklog:
        """Open requests past their deadline and, per active participant, its overdue
        tasks, as of ``now``: what the orchestrator alerts on, read for monitoring."""
        now = now or datetime.now(UTC)
        with self._db.transaction() as tx:
            requests = tx.execute("SELECT deadline FROM hw_erasure_requests WHERE status = 'open'")
            tasks = tx.execute(
                "SELECT t.participant, t.status, t.due_at FROM hw_erasure_tasks t "
                "JOIN hw_erasure_requests r ON r.request_id = t.request_id "
                "WHERE r.status = 'open' AND t.status <> 'confirmed'"
            )
        overdue = {p.name: 0 for p in self.participants()}
        for participant, status, due_at in tasks:
            if status == "failed" or now >= parse_time(str(due_at)):
                overdue[str(participant)] = overdue.get(str(participant), 0) + 1
        past = sum(1 for (deadline,) in requests if now >= parse_time(str(deadline)))
        return ErasureBacklog(past_deadline=past, overdue=overdue)

    def mark(self, request_id: str, participant: str, **fields: Any) -> None:
        """Update a task's bookkeeping (status, attempts, next_retry_at, alerted_at, error)."""
        allowed = {"status", "attempts", "next_retry_at", "alerted_at", "error"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"can only set {sorted(allowed)}")
        assignments = ", ".join(f"{k} = ?" for k in fields)
        self._db.execute(
            f"UPDATE hw_erasure_tasks SET {assignments} WHERE request_id = ? AND participant = ?",
            (*fields.values(), request_id, participant),
        )

    def warned(self, request_id: str, fraction: float) -> None:
        """Note that the warning at ``fraction`` of the time to the deadline went out."""
        self._db.execute(
            "UPDATE hw_erasure_requests SET warned_fraction = ? WHERE request_id = ?",
            (fraction, request_id),
        )

    def deadline_alerted(self, request_id: str, at: datetime) -> None:
        """Note that the alert for a passed deadline went out."""
        self._db.execute(
            "UPDATE hw_erasure_requests SET deadline_alerted_at = ? WHERE request_id = ?",
            (format_time(at), request_id),
        )

    def refuse(self, c: Confirmation) -> None:
        """A confirmed store whose verification found residue: back to failed (the
        orchestrator sends the erasure again); the finding is an attempt of its own."""
        with self._db.transaction() as tx:
            record_attempt(tx, c, "refused")
            # The method says why it failed: the retry asks the store to rebuild its files.
            tx.execute(
                "UPDATE hw_erasure_tasks SET status = 'failed', confirmed_at = NULL, "
                "method = ?, error = ? WHERE request_id = ? AND participant = ?",
                (REFUSED_METHOD, c.error, c.request_id, c.participant),
            )

    def scrub(self) -> dict[str, object]:
        """Remove the wiped ids' old row versions from the control plane's files."""
        return self._db.scrub(SCRUBBED_TABLES)

    def complete(
        self,
        request_id: str,
        at: datetime | None = None,
        *,
        verification: dict[str, Any] | None = None,
    ) -> None:
        """Close a request whose every task is confirmed, with the independent
        verification's findings (if one ran); the raw user id is wiped in the same write:
        from here on the request needs nothing but its keyed hash."""
        with self._db.transaction() as tx:
            _complete(tx, request_id, format_time(at) if at else _now(), verification)

    def tombstones(self, after: int | None = None) -> tuple[dict[str, int], int]:
        """The tombstones numbered above ``after`` (every one for None): subject hash ->
        erasure time (ms), and the highest number read (see ``tombstone_log``)."""
        return read_tombstones(self._db, after)


def _complete(
    tx: ControlTransaction, request_id: str, at: str, verification: dict[str, Any] | None
) -> None:
    pending = tx.execute(
        "SELECT COUNT(*) FROM hw_erasure_tasks WHERE request_id = ? AND status != 'confirmed'",
        (request_id,),
    )
    if int(pending[0][0]):
        raise ValueError(f"request {request_id} still has unconfirmed participants")
    found = None if verification is None else json.dumps(verification, default=str)
    tx.execute(
        "UPDATE hw_erasure_requests SET status = 'completed', completed_at = ?, "
        "user_id = NULL, event_ids = NULL, verification = ?, verified_at = ? "
        "WHERE request_id = ? AND status = 'open'",
        (at, found, at if found is not None else None, request_id),
    )

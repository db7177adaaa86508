"""The erasure ledger's tables and records: the schema of its requests, participants,
tasks and tombstones, the records read from them, and how rows map to them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = [
    "REQUEST_COLUMNS",
    "REQUEST_EXTRA_COLUMNS",
    "SCHEMA",
    "TASK_COLUMNS",
    "ErasureBacklog",
    "Participant",
    "RequestRecord",
    "TaskRecord",
    "request_from_row",
    "task_from_row",
]

#: The ledger's tables as first released (``REQUEST_EXTRA_COLUMNS`` lists the columns
#: added to the requests since).
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hw_erasure_requests (
        request_id TEXT PRIMARY KEY,
        subject_hash TEXT NOT NULL,
        user_id TEXT,
        reason TEXT NOT NULL,  -- the legal basis
        received_at TEXT NOT NULL,
        deadline TEXT NOT NULL,
        status TEXT NOT NULL,
        completed_at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS hw_erasure_requests_status ON hw_erasure_requests (status)",
    """CREATE TABLE IF NOT EXISTS hw_erasure_participants (
        name TEXT PRIMARY KEY,
        store TEXT NOT NULL,
        confirm_within_s DOUBLE PRECISION NOT NULL,
        registered_at TEXT NOT NULL,
        active INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS hw_erasure_tasks (
        request_id TEXT NOT NULL,
        participant TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        due_at TEXT NOT NULL,
        next_retry_at TEXT,
        confirmed_at TEXT,
        store TEXT,
        method TEXT,
        rows_removed BIGINT,
        rows_remaining BIGINT,
        evidence TEXT,
        error TEXT,
        alerted_at TEXT,
        PRIMARY KEY (request_id, participant)
    )""",
    """CREATE TABLE IF NOT EXISTS hw_tombstones (
        subject_hash TEXT PRIMARY KEY,
        erased_at_ms BIGINT NOT NULL,
        request_id TEXT NOT NULL
    )""",
)


class Participant(msgspec.Struct, frozen=True):
    """A store erasure must reach, and how soon it must confirm."""

    name: str
    store: str
    confirm_within_s: float


class ErasureBacklog(msgspec.Struct, frozen=True):
    """What the open requests owe at one moment: how many are past their regulatory
    deadline, and per active participant how many of its tasks are overdue (past their
    confirm-by time unconfirmed, or failed)."""

    past_deadline: int
    overdue: dict[str, int]


class TaskRecord(msgspec.Struct):
    """One participant's part of one request."""

    participant: str
    status: str  # pending | confirmed | failed | overdue
    attempts: int
    due_at: str
    next_retry_at: str | None
    confirmed_at: str | None
    store: str | None
    method: str | None
    rows_removed: int | None
    rows_remaining: int | None
    evidence: dict[str, Any] | None
    error: str | None
    alerted_at: str | None


class RequestRecord(msgspec.Struct):
    """One erasure request and its tasks."""

    request_id: str
    subject_hash: str
    user_id: str | None
    legal_basis: str
    received_at: str
    deadline: str
    status: str  # open | completed
    completed_at: str | None
    tasks: list[TaskRecord]
    reference: str | None = None  # a ticket or case id
    requested_by: str = ""  # the principal (team or service) whose key asked
    #: the largest fraction of the time to the deadline already warned about
    warned_fraction: float = 0.0
    deadline_alerted_at: str | None = None
    #: the independent verification's findings per store, once it passed
    verification: dict[str, Any] | None = None
    verified_at: str | None = None


REQUEST_COLUMNS = (
    "request_id, subject_hash, user_id, reason, received_at, deadline, status, completed_at, "
    "reference, requested_by, warned_fraction, deadline_alerted_at, verification, verified_at"
)
#: Added after the first release.
REQUEST_EXTRA_COLUMNS = {
    "reference": "TEXT",
    "requested_by": "TEXT NOT NULL DEFAULT ''",
    "warned_fraction": "DOUBLE PRECISION NOT NULL DEFAULT 0",
    "deadline_alerted_at": "TEXT",
    "verification": "TEXT",
    "verified_at": "TEXT",
    # The user's event ids the stores reported (sealed like user_id, wiped at completion;
    # read only by the verification, not with the request).
    "event_ids": "TEXT",
}


def request_from_row(
    row: Sequence[Any], tasks: list[TaskRecord], user_id: str | None
) -> RequestRecord:
    """A request from its row (in ``REQUEST_COLUMNS`` order); ``user_id`` already opened."""
    (rid, subject, _stored, basis, received, deadline, status, completed, ref, by) = row[:10]
    warned, alerted, verification, verified_at = row[10:]
    return RequestRecord(
        str(rid),
        str(subject),
        user_id,
        str(basis),
        str(received),
        str(deadline),
        str(status),
        completed,
        tasks,
        ref,
        str(by),
        float(warned or 0.0),
        alerted,
        json.loads(verification) if verification else None,
        verified_at,
    )


TASK_COLUMNS = (
    "participant, status, attempts, due_at, next_retry_at, confirmed_at, store, "
    "method, rows_removed, rows_remaining, evidence, error, alerted_at"
)


def task_from_row(row: Sequence[Any]) -> TaskRecord:
    """A task from its row (in ``TASK_COLUMNS`` order)."""
    (
        participant,
        status,
        attempts,
        due,
        retry,
        confirmed,
        store,
        method,
        removed,
        remaining,
        evidence,
        error,
        alerted,
    ) = row
    return TaskRecord(
        participant=participant,
        status=status,
        attempts=int(attempts),
        due_at=due,
        next_retry_at=retry,
        confirmed_at=confirmed,
        store=store,
        method=method,
        rows_removed=None if removed is None else int(removed),
        rows_remaining=None if remaining is None else int(remaining),
        evidence=json.loads(evidence) if evidence else None,
        error=error,
        alerted_at=alerted,
    )

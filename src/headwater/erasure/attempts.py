"""Every attempt of every store at every erasure request, kept for the audit.

A store's task shows the confirmation that applied the erasure; a later attempt (an
orchestrator's retry that found nothing left, or a failure after the confirmation)
is added here and never replaces it. So the audit can show what was removed, when and
how, and every try before and after.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from headwater._time import format_time
from headwater.control.base import ControlTransaction
from headwater.erasure.events import Confirmation

__all__ = ["SCHEMA", "Attempt", "attempts_of", "record_attempt"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hw_erasure_attempts (
        request_id TEXT NOT NULL,
        participant TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        method TEXT,
        rows_removed BIGINT,
        rows_remaining BIGINT,
        evidence TEXT,
        error TEXT,
        PRIMARY KEY (request_id, participant, attempt)
    )""",
)


class Attempt(msgspec.Struct, frozen=True):
    """One store's one try at one request."""

    attempt: int
    at: str
    #: applied (the confirmation the task keeps), repeated (a later confirmation, kept
    #: here only), or failed
    outcome: str
    method: str | None
    rows_removed: int | None
    rows_remaining: int | None
    evidence: dict[str, Any] | None
    error: str | None


def record_attempt(tx: ControlTransaction, c: Confirmation, outcome: str) -> None:
    """Add ``c`` to its store's attempts (inside the caller's transaction)."""
    (n,) = tx.execute(
        "SELECT COUNT(*) FROM hw_erasure_attempts WHERE request_id = ? AND participant = ?",
        (c.request_id, c.participant),
    )[0]
    tx.execute(
        "INSERT INTO hw_erasure_attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            c.request_id,
            c.participant,
            int(n) + 1,
            format_time(c.verified_at),
            outcome,
            c.method,
            c.rows_removed,
            c.rows_remaining,
            json.dumps(c.evidence, default=str),
            c.error or None,
        ),
    )


def attempts_of(tx: ControlTransaction, request_id: str) -> dict[str, list[Attempt]]:
    """Each store's attempts at a request, in order."""
    out: dict[str, list[Attempt]] = {}
    for participant, n, at, outcome, method, removed, remaining, evidence, error in tx.execute(
        "SELECT participant, attempt, at, outcome, method, rows_removed, rows_remaining, "
        "evidence, error FROM hw_erasure_attempts WHERE request_id = ? "
        "ORDER BY participant, attempt",
        (request_id,),
    ):
        out.setdefault(str(participant), []).append(
            Attempt(
                attempt=int(n),
                at=str(at),
                outcome=str(outcome),
                method=method,
                rows_removed=None if removed is None else int(removed),
                rows_remaining=None if remaining is None else int(remaining),
                evidence=json.loads(evidence) if evidence else None,
                error=error,
            )
        )
    return out

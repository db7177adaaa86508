"""The regulator's view of an erasure request.

:func:`request_audit` reads a request from the ledger: its deadline and warnings, and
one row per store with the confirmation that applied the erasure, the independent
verification's finding and every attempt. :func:`export_document` turns an audit into
the one document a regulator is given, with what cannot be erased at once (tombstoned
log records, server snapshots and backups) and the date it will be gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from headwater._time import format_time, parse_time
from headwater.erasure.ledger import ErasureLedger
from headwater.erasure.legal import LEGAL_BASES

__all__ = ["export_document", "request_audit"]


def request_audit(
    ledger: ErasureLedger,
    request_id: str,
    *,
    warn_at: Sequence[float],
    now: datetime | None = None,
) -> dict[str, Any]:
    """The regulator's answer: the request and one row per store, never one pass/fail;
    ``warn_at``: the fractions of the time to the deadline warned at."""
    record = ledger.get(request_id)
    attempts = ledger.attempts(request_id)
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
        "deadline_warnings": [f for f in warn_at if f <= record.warned_fraction],
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


def export_document(
    audit: dict[str, Any], *, backup_retention: timedelta | None, now: datetime | None = None
) -> dict[str, Any]:
    """One document per request for a regulator, from its ``audit``: the request, every
    store with its method, the evidence of the attempt that applied the erasure, the
    independent verification and every attempt, and what cannot be erased at once, with
    the date it will be gone (``backup_retention``: how long the operator keeps the
    servers' snapshots and backups, None if unstated)."""
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
        persistence = str(scrub.get("server_persistence", "")) if isinstance(scrub, dict) else ""
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
                    "gone_by": _backups_gone_by(backup_retention, s["confirmed_at"]),
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


def _backups_gone_by(backup_retention: timedelta | None, confirmed_at: str | None) -> str:
    if backup_retention is None or confirmed_at is None:
        return (
            "the next snapshot or AOF rewrite, and the end of the operator's backup "
            "retention (not stated: set HEADWATER_BACKUP_RETENTION)"
        )
    return format_time(parse_time(confirmed_at) + backup_retention)

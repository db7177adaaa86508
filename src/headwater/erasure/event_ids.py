"""The ids of a user's events that the stores reported while erasing it, kept in the
ledger for the verification to search for.

They name the user's records as surely as its raw id does, so they are kept the same
way: in the request's row, sealed (encrypted, see ``SubjectSealer``) under the request
id, at most :data:`MAX_EVENT_IDS` of them (the first reported), and wiped when the
request completes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from headwater.control.base import ControlDatabase, ControlTransaction
from headwater.erasure.subject import SubjectSealer

__all__ = ["MAX_EVENT_IDS", "add_event_ids", "read_event_ids"]

#: At most this many of a user's event ids are kept for the verification to search (the
#: first reported); the finding states how many were searched.
MAX_EVENT_IDS = 100_000


def add_event_ids(
    tx: ControlTransaction, sealer: SubjectSealer, request_id: str, ids: Sequence[str]
) -> None:
    """Add ``ids`` to an open request's event ids (inside the caller's transaction)."""
    rows = tx.execute(
        "SELECT event_ids FROM hw_erasure_requests WHERE request_id = ? AND status = 'open'",
        (request_id,),
    )
    if not rows:
        return  # completed meanwhile (or unknown): nothing is kept past completion
    known = _open_ids(sealer, rows[0][0], request_id)
    merged = list(dict.fromkeys([*known, *ids]))[:MAX_EVENT_IDS]
    if len(merged) == len(known):
        return
    tx.execute(
        "UPDATE hw_erasure_requests SET event_ids = ? WHERE request_id = ?",
        (sealer.seal(json.dumps(merged), request_id), request_id),
    )


def _open_ids(sealer: SubjectSealer, stored: Any, request_id: str) -> tuple[str, ...]:
    if not stored:
        return ()
    return tuple(json.loads(sealer.open(str(stored), request_id)))


def read_event_ids(
    db: ControlDatabase, sealer: SubjectSealer, request_ids: Sequence[str]
) -> dict[str, tuple[str, ...]]:
    """The event ids the stores reported for each open request (opened); a completed
    request has none any more."""
    found: dict[str, tuple[str, ...]] = {}
    for start in range(0, len(request_ids), 500):
        chunk = list(request_ids[start : start + 500])
        rows = db.execute(
            "SELECT request_id, event_ids FROM hw_erasure_requests WHERE request_id IN "
            f"({', '.join('?' * len(chunk))}) AND event_ids IS NOT NULL",
            tuple(chunk),
        )
        found.update({str(rid): _open_ids(sealer, stored, str(rid)) for rid, stored in rows})
    return found

"""Closing erasure requests that every store has confirmed.

Where the deployment has a verifier (``erasure.verify``), a fully confirmed request is
verified first, every store read again, once for all the requests ready in the same
pass. A store in which the verification finds the user is refused: its task goes back
to ``failed``, and the orchestrator's chase sends it the erasure again, asking it to
rebuild its files. The other requests' erasure events are purged from the bus (where
the bus can purge), and the requests completed in the ledger with the verification's
findings, their raw user ids wiped.

:func:`verify_request` runs the same verification of one request on demand, and
changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from headwater._time import format_time
from headwater.bus.base import KIND_ERASURE, Bus, Record
from headwater.erasure.events import Confirmation, decode_erasure
from headwater.erasure.ledger import REFUSED_METHOD, ErasureLedger, RequestRecord
from headwater.erasure.verify import Finding, Subject, Verifier
from headwater.errors import ErasureError

__all__ = ["complete_confirmed", "verify_request"]

log = logging.getLogger("headwater.erasure")


def complete_confirmed(
    records: Sequence[RequestRecord],
    now: datetime,
    *,
    ledger: ErasureLedger,
    bus: Bus,
    verifier: Verifier | None,
    clock: Callable[[], datetime],
) -> set[str]:
    """Verify every store of these fully confirmed requests, then close those with no
    residue; the ids of the requests closed. ``clock`` gives each completion's time."""
    for record in records:
        if record.user_id is None:
            raise ErasureError(f"request {record.request_id} lost its subject id while open")
    findings: list[dict[str, Finding]] = [{} for _ in records]
    if verifier is not None and records:
        findings = verifier.verify_many(
            [
                (_subject(r, ids), [t.participant for t in r.tasks])
                for r, ids in zip(records, _event_ids(ledger, records), strict=True)
            ]
        )
    clean: list[tuple[RequestRecord, dict[str, Finding]]] = []
    for record, found in zip(records, findings, strict=True):
        dirty = [f for f in found.values() if f.residue]
        if dirty:
            _refuse(ledger, record, dirty, now)
        else:
            clean.append((record, found))
    if clean and bus.erasure_capability().can_purge:
        _purge_erasure_events(bus, [record for record, _ in clean])
    for record, found in clean:
        _close(ledger, verifier, record, found, clock)
    return {record.request_id for record, _ in clean}


def _event_ids(ledger: ErasureLedger, records: Sequence[RequestRecord]) -> list[tuple[str, ...]]:
    found = ledger.event_ids([r.request_id for r in records])
    return [found.get(r.request_id, ()) for r in records]


def _subject(record: RequestRecord, event_ids: Sequence[str]) -> Subject:
    return Subject(str(record.user_id), record.subject_hash, tuple(event_ids))


def _close(
    ledger: ErasureLedger,
    verifier: Verifier | None,
    record: RequestRecord,
    findings: dict[str, Finding],
    clock: Callable[[], datetime],
) -> None:
    verification = (
        {name: msgspec.to_builtins(f) for name, f in findings.items()}
        if verifier is not None
        else None
    )
    ledger.complete(record.request_id, clock(), verification=verification)
    log.info("erasure %s completed", record.request_id)


def _refuse(
    ledger: ErasureLedger, record: RequestRecord, dirty: list[Finding], now: datetime
) -> None:
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
        ledger.refuse(
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


def _purge_erasure_events(bus: Bus, records: Sequence[RequestRecord]) -> None:
    """The erasure events of these requests named their users too: gone once every
    store confirmed. One purge for all the requests a pass closes (the log checkpointed
    once), not one per request: through the bus's index of its erasure events where it
    keeps one, else one scan of the recent stretch of each partition."""
    requests: dict[str, set[str]] = {}
    for record in records:
        requests.setdefault(str(record.user_id), set()).add(record.request_id)

    def ours(ids: set[str]) -> Callable[[Record], bool]:
        return lambda r: r.kind == KIND_ERASURE and decode_erasure(r.value).request_id in ids

    wheres: dict[str, Callable[[Record], bool] | None] = {
        user: ours(ids) for user, ids in requests.items()
    }
    # Where the bus indexes where it put its erasure events, only their batches are read.
    removed = bus.purge_indexed(KIND_ERASURE, wheres)
    wheres = {user: where for user, where in wheres.items() if not (removed or {}).get(user)}
    if not wheres:
        return
    # They were appended after the requests arrived: where the bus can, look at
    # that recent stretch of the log only (a few seconds of slack for the clock),
    # and at all of it only for a user whose events were not found there.
    since_ms = (
        min(int(datetime.fromisoformat(r.received_at).timestamp() * 1000) for r in records) - 5_000
    )
    removed = bus.purge_recent(wheres, since_ms)
    missed = {user: where for user, where in wheres.items() if not (removed or {}).get(user)}
    if missed:
        bus.purge_keys(missed)


def verify_request(
    ledger: ErasureLedger, verifier: Verifier | None, request_id: str
) -> dict[str, Any]:
    """Run the independent verification of an open request now (nothing changes in
    the ledger); a completed request answers with the findings recorded before it
    completed, its raw id having been wiped since."""
    record = ledger.get(request_id)
    if record.user_id is None:
        return {
            "request_id": request_id,
            "status": record.status,
            "verified_at": record.verified_at,
            "findings": record.verification,
            "note": "completed: the raw user id was wiped; these are the findings "
            "recorded before completion",
        }
    if verifier is None:
        raise ErasureError("no verifier is configured for this deployment")
    findings = verifier.verify_many(
        [
            (
                _subject(record, _event_ids(ledger, [record])[0]),
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

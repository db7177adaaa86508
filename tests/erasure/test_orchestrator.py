"""A participant that fails or is stopped: the request stays open, retries happen, the
alert fires (log, metric, webhook), and it completes once the participant is back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest

from headwater.bus import Message, Record, open_bus
from headwater.bus.base import KIND_ERASURE
from headwater.contract.signal import Signal, encode_signal
from headwater.control import open_control_database
from headwater.erasure.events import Confirmation, ErasureEvent, decode_erasure, encode_erasure
from headwater.erasure.ledger import ErasureLedger, Participant
from headwater.erasure.orchestrator import ErasureOrchestrator
from headwater.erasure.subject import SubjectHasher, SubjectSealer
from headwater.erasure.verify import CheckResult, Subject, Verifier
from headwater.errors import NoErasureParticipantsError, UnknownErasureRequestError
from headwater.metrics import ERASURE_ALERTS
from headwater.runtime import Consumer, ConsumerRuntime


class Store(Consumer):
    """A participant whose store can be switched off."""

    name = "flaky-store"
    confirm_within_s = 1.0

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.down = False
        self.attempts = 0

    def participants(self) -> list[Participant]:
        return [Participant(self.name, "memory", self.confirm_within_s)]

    def handle(self, records: Sequence[Record]) -> None:
        for r in records:
            self.rows[r.key] = self.rows.get(r.key, 0) + 1

    def erase(self, event: ErasureEvent) -> list[Confirmation]:
        self.attempts += 1
        if self.down:
            raise RuntimeError("store offline")
        removed = 1 if self.rows.pop(event.user_id, None) is not None else 0
        confirmation = Confirmation(
            request_id=event.request_id,
            participant=self.name,
            store="memory",
            method="delete",
            rows_removed=removed,
            rows_remaining=int(event.user_id in self.rows),
            verified_at=datetime.now(UTC),
        )
        return [confirmation]


class Steady(Store):
    name = "steady-store"


def _runtimes(bus: Any, ledger: ErasureLedger, *stores: Store) -> list[ConsumerRuntime]:
    """One runtime per store, failing fast: one attempt, then the orchestrator's turn."""
    return [
        ConsumerRuntime(
            bus, h.name, h, ledger=ledger, max_attempts=1, backoff=(0.001, 0.01), poll_timeout=0.01
        )
        for h in stores
    ]


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    received: list[dict[str, object]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(msgspec.json.decode(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    server.shutdown()
    server.server_close()


def test_overdue_participant_is_retried_alerted_and_completes_when_back(
    tmp_path: Path, control_url: str, webhook: tuple[str, list[dict[str, object]]]
) -> None:
    url, received = webhook
    db = open_control_database(control_url)
    ledger = ErasureLedger(db, SubjectSealer(b"k" * 32))
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=2")
    flaky, steady = Store(), Steady()
    runtimes = _runtimes(bus, ledger, flaky, steady)
    orch = ErasureOrchestrator(
        ledger, bus, SubjectHasher(b"k" * 32), retry_base=timedelta(seconds=0.2), webhook_url=url
    )
    now = datetime.now(UTC)
    bus.publish(
        [
            Message(
                "u1",
                encode_signal(
                    Signal(
                        event_id="e",
                        event_type="view",
                        user_id="u1",
                        surface="web",
                        timestamp=now,
                        item_id="i",
                    )
                ),
            )
        ]
    )
    flaky.down = True
    alerts_before = ERASURE_ALERTS.labels("flaky-store")._value.get()
    request = orch.request("u1", legal_basis="gdpr-art17", requested_by="test")
    for r in runtimes:
        while r.step():
            pass
    audit = orch.audit(request.request_id)
    by = {s["participant"]: s for s in audit["stores"]}
    assert by["steady-store"]["status"] == "confirmed"
    assert by["flaky-store"]["status"] == "failed"
    assert "store offline" in by["flaky-store"]["error"]

    # Past the participant's deadline: overdue, alert, resend addressed to it alone.
    later = now + timedelta(seconds=2)
    orch.tick(later)
    audit = orch.audit(request.request_id, later)
    flaky_row = next(s for s in audit["stores"] if s["participant"] == "flaky-store")
    assert audit["status"] == "open"
    assert flaky_row["status"] == "overdue"
    assert flaky_row["attempts"] == 2
    assert len(received) == 1
    assert received[0]["participant"] == "flaky-store"
    assert ERASURE_ALERTS.labels("flaky-store")._value.get() == alerts_before + 1
    resent = decode_erasure([r for r in _records(bus, "u1") if r.kind == KIND_ERASURE][-1].value)
    assert (resent.participants, resent.rebuild) == (("flaky-store",), False), (
        "a store that failed (not refused) is not asked to rebuild its files"
    )
    steady_attempts = steady.attempts
    for r in runtimes:
        while r.step():
            pass
    assert steady.attempts == steady_attempts, "the resend is addressed to the overdue store only"
    assert flaky.attempts == 2

    # Still down: backoff, then another attempt and another alert.
    orch.tick(later + timedelta(seconds=0.05))
    assert len(received) == 1, "no resend before the backoff has passed"
    orch.tick(later + timedelta(seconds=1))
    assert len(received) == 2
    # The store comes back: the next attempt confirms and the request completes.
    flaky.down = False
    for r in runtimes:
        while r.step():
            pass
    result = orch.tick(later + timedelta(seconds=2))
    assert result["completed"] == 1
    done = orch.audit(request.request_id)
    assert done["status"] == "completed"
    assert all(s["status"] == "confirmed" for s in done["stores"])
    assert next(s for s in done["stores"] if s["participant"] == "flaky-store")["attempts"] == 3
    assert ledger.get(request.request_id).user_id is None
    for r in runtimes:
        r.close()
    bus.close()
    db.close()


def test_no_participants_is_a_clear_error(tmp_path: Path) -> None:
    db = open_control_database(f"sqlite:///{tmp_path / 'c.db'}")
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}")
    orch = ErasureOrchestrator(
        ErasureLedger(db, SubjectSealer(b"k" * 32)), bus, SubjectHasher(b"k" * 32)
    )
    with pytest.raises(NoErasureParticipantsError, match="no erasure participants"):
        orch.request("u1", legal_basis="gdpr-art17", requested_by="test")
    with pytest.raises(UnknownErasureRequestError):
        orch.audit("er_nope")
    bus.close()
    db.close()


def test_regulatory_deadline_and_time_remaining(tmp_path: Path) -> None:
    db = open_control_database(f"sqlite:///{tmp_path / 'c.db'}")
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}")
    ledger = ErasureLedger(db, SubjectSealer(b"k" * 32))
    runtime = ConsumerRuntime(bus, "s", Steady(), ledger=ledger)
    orch = ErasureOrchestrator(ledger, bus, SubjectHasher(b"k" * 32), deadline=timedelta(days=30))
    request = orch.request("u9", legal_basis="consent-withdrawn", requested_by="test")
    received = datetime.fromisoformat(request.received_at)
    audit = orch.audit(request.request_id, received + timedelta(days=29))
    assert 86_000 < audit["time_remaining_s"] <= 86_400
    assert audit["past_deadline"] is False
    assert orch.audit(request.request_id, received + timedelta(days=31))["past_deadline"]
    # A deadline given with the request is kept, even one already due.
    due = orch.request(
        "u8", legal_basis="consent-withdrawn", requested_by="t", deadline=timedelta(0)
    )
    later = datetime.fromisoformat(due.received_at) + timedelta(seconds=1)
    assert orch.audit(due.request_id, later)["past_deadline"]
    runtime.close()
    bus.close()
    db.close()


def test_every_attempt_is_kept_and_a_later_one_never_replaces_the_confirmation(
    tmp_path: Path,
) -> None:
    db = open_control_database(f"sqlite:///{tmp_path / 'c.db'}")
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}")
    ledger = ErasureLedger(db, SubjectSealer(b"k" * 32))
    ledger.register_participant(Participant("store-a", "memory", 60.0))
    orch = ErasureOrchestrator(ledger, bus, SubjectHasher(b"k" * 32))
    request = orch.request("u5", legal_basis="gdpr-art17", requested_by="test")
    rid = request.request_id

    def attempt(ok: bool, removed: int, error: str = "") -> Confirmation:
        return Confirmation(
            request_id=rid,
            participant="store-a",
            store="memory",
            method="delete",
            rows_removed=removed,
            rows_remaining=0 if ok else None,
            verified_at=datetime.now(UTC),
            ok=ok,
            error=error,
        )

    ledger.confirm(attempt(False, 0, "store offline"))
    ledger.confirm(attempt(True, 3))
    ledger.confirm(attempt(True, 0))  # a retry that found nothing left
    ledger.confirm(attempt(False, 0, "timeout"))  # a late failure

    store = orch.audit(rid)["stores"][0]
    assert store["status"] == "confirmed"
    assert store["rows_removed"] == 3  # the confirmation that applied the erasure
    assert store["error"] is None
    assert [(a["attempt"], a["outcome"]) for a in store["history"]] == [
        (1, "failed"),
        (2, "applied"),
        (3, "repeated"),
        (4, "failed"),
    ]
    assert store["history"][0]["error"] == "store offline"
    bus.close()
    db.close()


def _drain(runtimes: Sequence[ConsumerRuntime]) -> None:
    for r in runtimes:
        while r.step():
            pass


def test_the_deadline_drives_warnings_an_alert_and_a_late_completion(
    tmp_path: Path, control_url: str, webhook: tuple[str, list[dict[str, object]]]
) -> None:
    """A store that fails until after a 20 s deadline, chased every 5 s: warnings at 50%
    and 80%, one alert when the deadline passes, ``overdue`` listed, the completion
    flagged late by its delay, and the other store's applied evidence never replaced."""
    url, received = webhook
    db = open_control_database(control_url)
    ledger = ErasureLedger(db, SubjectSealer(b"k" * 32))
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=2")
    flaky, steady = Store(), Steady()
    runtimes = _runtimes(bus, ledger, flaky, steady)
    orch = ErasureOrchestrator(
        ledger,
        bus,
        SubjectHasher(b"k" * 32),
        deadline=timedelta(seconds=20),
        chase_after=timedelta(seconds=5),
        retry_base=timedelta(seconds=5),
        webhook_url=url,
    )
    steady.rows["u1"] = 1
    flaky.down = True
    request = orch.request("u1", legal_basis="gdpr-art17", requested_by="test")
    t0 = datetime.fromisoformat(ledger.get(request.request_id).received_at)
    _drain(runtimes)
    applied = next(
        s for s in orch.audit(request.request_id)["stores"] if s["participant"] == "steady-store"
    )
    assert applied["status"] == "confirmed"
    assert applied["rows_removed"] == 1

    def statuses() -> list[str]:
        return [str(a["status"]) for a in received]

    orch.tick(t0 + timedelta(seconds=4))
    # The failed store is chased at once, on its own clock, before any deadline warning.
    assert statuses() == ["failed"]
    _drain(runtimes)
    orch.tick(t0 + timedelta(seconds=9.5))
    assert statuses() == ["failed", "failed"], "chased again after the backoff"
    _drain(runtimes)
    orch.tick(t0 + timedelta(seconds=10.5))
    assert statuses()[-1] == "warning"
    assert "50%" in str(received[-1]["message"])
    assert received[-1]["participant"] == "flaky-store"
    orch.tick(t0 + timedelta(seconds=10.6))
    assert statuses().count("warning") == 1, "each fraction warns once"
    orch.tick(t0 + timedelta(seconds=16.5))
    assert statuses().count("warning") == 2
    before = orch.audit(request.request_id, t0 + timedelta(seconds=19))
    assert before["past_deadline"] is False
    assert before["deadline_warnings"] == [0.5, 0.8]
    # Overdue already: its store failed and is being chased.
    assert [a["request_id"] for a in orch.overdue(now=t0 + timedelta(seconds=19))] == [
        request.request_id
    ]

    orch.tick(t0 + timedelta(seconds=20.5))
    assert statuses().count("deadline_passed") == 1
    orch.tick(t0 + timedelta(seconds=21))
    assert statuses().count("deadline_passed") == 1, "the deadline alerts once"
    late = orch.audit(request.request_id, t0 + timedelta(seconds=21))
    assert late["past_deadline"] is True
    assert late["deadline_alerted_at"] is not None
    flaky_row = next(s for s in late["stores"] if s["participant"] == "flaky-store")
    # Chased again at the deadline: sent once more, and overdue until it answers.
    assert flaky_row["status"] == "overdue"
    assert flaky_row["next_retry_at"] is not None
    listed = orch.overdue(now=t0 + timedelta(seconds=21))
    assert [a["request_id"] for a in listed] == [request.request_id]
    assert listed[0]["past_deadline"] is True
    assert ledger.backlog(t0 + timedelta(seconds=21)).past_deadline == 1

    # A redundant retry reaches the steady store: history only, its evidence stands.
    bus.publish(
        [
            Message(
                "u1",
                encode_erasure(
                    ErasureEvent(
                        request_id=request.request_id,
                        user_id="u1",
                        requested_at=t0,
                        attempt=9,
                        participants=("steady-store",),
                    )
                ),
                KIND_ERASURE,
            )
        ]
    )
    flaky.down = False
    orch.tick(t0 + timedelta(seconds=31))  # the chase resends to the flaky store
    _drain(runtimes)
    done_at = t0 + timedelta(seconds=32)
    assert orch.tick(done_at)["completed"] == 1
    audit = orch.audit(request.request_id, done_at)
    assert audit["status"] == "completed"
    assert audit["completed_late"] is True
    assert audit["late_by_s"] == pytest.approx(12.0, abs=0.01)
    assert audit["past_deadline"] is True
    assert all(s["next_retry_at"] is None for s in audit["stores"])

    doc = orch.export(request.request_id, done_at)
    assert doc["request"]["completed_late"] is True
    assert doc["request"]["subject_hash"] == SubjectHasher(b"k" * 32)("u1")
    assert "u1" not in msgspec.json.encode(doc).decode().replace(request.request_id, "")
    steady_doc = next(s for s in doc["stores"] if s["store"] == "steady-store")
    assert steady_doc["rows_removed"] == 1, "the applied attempt's evidence is kept"
    assert [a["outcome"] for a in steady_doc["attempts"]] == ["applied", "repeated"]
    flaky_doc = next(s for s in doc["stores"] if s["store"] == "flaky-store")
    outcomes = [a["outcome"] for a in flaky_doc["attempts"]]
    assert outcomes[-1] == "applied"
    assert "failed" in outcomes
    for r in runtimes:
        r.close()
    bus.close()
    db.close()


def test_a_store_that_confirms_but_keeps_a_copy_is_refused_and_chased(
    tmp_path: Path, control_url: str
) -> None:
    """The store confirms, the independent check still finds the user: the request stays
    open, the store goes back to failed with a ``refused`` attempt, and it completes once
    a later attempt really removes the copy."""
    db = open_control_database(control_url)
    ledger = ErasureLedger(db, SubjectSealer(b"k" * 32))
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=2")
    store = Steady()
    leftover = {"u1"}  # a copy the store's own scan does not see

    def check(users: Sequence[Subject]) -> CheckResult:
        return "look in the copy", {u.user_id: (int(u.user_id in leftover), {}) for u in users}

    runtime = ConsumerRuntime(bus, store.name, store, ledger=ledger, poll_timeout=0.01)
    orch = ErasureOrchestrator(
        ledger,
        bus,
        SubjectHasher(b"k" * 32),
        retry_base=timedelta(seconds=1),
        verifier=Verifier({store.name: [check]}),
    )
    store.rows["u1"] = 1
    request = orch.request("u1", legal_basis="gdpr-art17", requested_by="test")
    t0 = datetime.fromisoformat(ledger.get(request.request_id).received_at)
    _drain([runtime])
    assert orch.tick(t0 + timedelta(seconds=1))["completed"] == 0
    audit = orch.audit(request.request_id)
    (row,) = audit["stores"]
    assert audit["status"] == "open"
    assert row["status"] == "overdue"  # refused, then chased at once: sent again
    assert [a["outcome"] for a in row["history"]] == ["applied", "refused"]
    assert "verification found 1" in row["history"][-1]["error"]
    # The retry asks the store to rebuild its files: its own search (of what it still
    # knows) found nothing the first time, so searching again would not help.
    sent = [decode_erasure(r.value) for r in _records(bus, "u1") if r.kind == KIND_ERASURE]
    assert [(e.attempt, e.rebuild) for e in sent] == [(1, False), (2, True)]
    # The store erases again, this time the copy too.
    leftover.clear()
    _drain([runtime])
    assert orch.tick(t0 + timedelta(seconds=4))["completed"] == 1
    done = orch.audit(request.request_id)
    assert done["status"] == "completed"
    assert done["stores"][0]["verification"]["residue"] == 0
    assert done["verified_at"] is not None
    runtime.close()
    bus.close()
    db.close()


def test_the_export_dates_what_cannot_be_erased_at_once(tmp_path: Path) -> None:
    """A log that only ages out, the PostgreSQL server's WAL and backups, and Redis
    snapshots: each listed with the date it is gone, or a statement that it is not
    known until the operator states the backup retention."""
    db = open_control_database(f"sqlite:///{tmp_path / 'c.db'}")
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}")
    ledger = ErasureLedger(db, SubjectSealer(b"k" * 32))
    for name in ("bus-log", "dead-letters", "online-features", "idempotency-window"):
        ledger.register_participant(Participant(name, "memory", 60.0))
    orch = ErasureOrchestrator(
        ledger, bus, SubjectHasher(b"k" * 32), backup_retention=timedelta(days=7)
    )
    rid = orch.request("u9", legal_basis="gdpr-art17", requested_by="test").request_id
    at = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    evidence: dict[str, dict[str, Any]] = {
        "bus-log": {"gone_by": "2026-12-09T12:00:00.000Z", "retention_seconds": 604_800},
        "dead-letters": {
            "scrub": {"server": "postgresql", "dead_not_yet_removable": {"hw_dead_letters": 0}},
            "server_copies": {"what": "the deleted dead-letter rows in the server's WAL"},
        },
        "online-features": {"scrub": {"server_persistence": "rdb (save 3600 1)"}},
        # A managed Redis that refuses CONFIG: it may keep snapshots, so it is listed.
        "idempotency-window": {"scrub": {"server_persistence": "unknown (NOPERM CONFIG)"}},
    }
    for name, facts in evidence.items():
        ledger.confirm(
            Confirmation(
                request_id=rid,
                participant=name,
                store="memory",
                method="delete",
                rows_removed=1,
                rows_remaining=None if name == "bus-log" else 0,
                verified_at=at,
                evidence=facts,
            )
        )
    pending = {p["store"]: p for p in orch.export(rid)["not_erasable_at_once"]}
    assert pending["bus-log"]["gone_by"] == "2026-12-09T12:00:00.000Z"
    assert "not stated" in pending["dead-letters"]["gone_by"]
    assert "WAL" in pending["dead-letters"]["what"]
    assert pending["online-features"]["gone_by"] == "2026-12-09T12:00:00.000Z"
    assert "could not be read" in pending["idempotency-window"]["what"]
    assert pending["idempotency-window"]["gone_by"] == "2026-12-09T12:00:00.000Z"
    orch.backup_retention = None
    unstated = {p["store"]: p for p in orch.export(rid)["not_erasable_at_once"]}
    assert "HEADWATER_BACKUP_RETENTION" in unstated["online-features"]["gone_by"]
    bus.close()
    db.close()


def test_the_event_ids_a_store_reports_are_searched_kept_sealed_and_wiped(
    tmp_path: Path, control_url: str
) -> None:
    """The archive reports the ids of the user's events before erasing them: the ledger
    keeps them sealed while the request is open, the verification searches every store
    for them, and completion wipes them with the raw id."""
    db = open_control_database(control_url)
    ledger = ErasureLedger(db, SubjectSealer(b"k" * 32))
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=2")
    event_ids = tuple(f"evt-{i:04d}-of-u1" for i in range(300))

    class Reporting(Steady):
        def erase(self, event: ErasureEvent) -> list[Confirmation]:
            (c,) = super().erase(event)
            return [msgspec.structs.replace(c, event_ids=event_ids if c.rows_removed else ())]

    store = Reporting()
    seen: list[Subject] = []
    copy = {"evt-0123-of-u1"}  # another store still holds one of the events, not the user

    def check(users: Sequence[Subject]) -> CheckResult:
        seen.extend(users)
        return "look for events", {
            u.user_id: (len(copy & set(u.event_ids)), {"where": sorted(copy)}) for u in users
        }

    runtime = ConsumerRuntime(bus, store.name, store, ledger=ledger, poll_timeout=0.01)
    orch = ErasureOrchestrator(
        ledger,
        bus,
        SubjectHasher(b"k" * 32),
        retry_base=timedelta(seconds=1),
        verifier=Verifier({store.name: [check]}),
    )
    store.rows["u1"] = 1
    request = orch.request("u1", legal_basis="gdpr-art17", requested_by="test")
    rid = request.request_id
    t0 = datetime.fromisoformat(ledger.get(rid).received_at)
    _drain([runtime])
    ((stored,),) = db.execute(
        "SELECT event_ids FROM hw_erasure_requests WHERE request_id = ?", (rid,)
    )
    assert str(stored).startswith("sealed:v1:")
    assert "evt-" not in str(stored)
    assert ledger.event_ids([rid]) == {rid: event_ids}
    # The copy of one event is residue: refused, sent again; the retry removes nothing
    # and reports no ids, which must not lose the ones kept.
    assert orch.tick(t0 + timedelta(seconds=1))["completed"] == 0
    assert seen[-1].event_ids == event_ids
    _drain([runtime])
    assert ledger.event_ids([rid]) == {rid: event_ids}
    copy.clear()
    assert orch.tick(t0 + timedelta(seconds=4))["completed"] == 1
    assert seen[-1].event_ids == event_ids
    finding = orch.audit(rid)["stores"][0]["verification"]
    assert finding["residue"] == 0
    assert finding["detail"]["event_ids_searched"] == len(event_ids)
    assert ledger.event_ids([rid]) == {}
    ((wiped,),) = db.execute(
        "SELECT event_ids FROM hw_erasure_requests WHERE request_id = ?", (rid,)
    )
    assert wiped is None
    runtime.close()
    bus.close()
    db.close()


def test_a_request_completes_at_the_moment_it_closes_not_when_the_pass_began(
    tmp_path: Path, control_url: str
) -> None:
    """A verification that takes its time: the completion time the audit states (and
    the delay past the deadline computed from it) includes it."""
    db = open_control_database(control_url)
    ledger = ErasureLedger(db, SubjectSealer(b"k" * 32))
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=2")
    store = Steady()

    def slow_check(users: Sequence[Subject]) -> CheckResult:
        time.sleep(0.4)
        return "look slowly", {u.user_id: (0, {}) for u in users}

    runtime = ConsumerRuntime(bus, store.name, store, ledger=ledger, poll_timeout=0.01)
    orch = ErasureOrchestrator(
        ledger, bus, SubjectHasher(b"k" * 32), verifier=Verifier({store.name: [slow_check]})
    )
    store.rows["u1"] = 1
    request = orch.request("u1", legal_basis="gdpr-art17", requested_by="test")
    pass_began = datetime.fromisoformat(ledger.get(request.request_id).received_at) + timedelta(
        seconds=1
    )
    _drain([runtime])
    assert orch.tick(pass_began)["completed"] == 1
    completed = datetime.fromisoformat(orch.audit(request.request_id)["completed_at"])
    assert completed - pass_began >= timedelta(seconds=0.4)
    runtime.close()
    bus.close()
    db.close()


def test_a_request_closes_once_every_store_confirmed_without_waiting_for_the_next_pass(
    tmp_path: Path, control_url: str
) -> None:
    """Between full passes (a minute apart here) the orchestrator asks whether a request
    has every confirmation, and verifies and closes it then; a request still waiting
    for a store, and one whose pass fails, cause no pass of their own."""
    db = open_control_database(control_url)
    ledger = ErasureLedger(db, SubjectSealer(b"k" * 32))
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=2")
    store = Steady()
    verified: list[str] = []

    def check(users: Sequence[Subject]) -> CheckResult:
        verified.extend(u.user_id for u in users)
        return "look", {u.user_id: (0, {}) for u in users}

    runtime = ConsumerRuntime(bus, store.name, store, ledger=ledger, poll_timeout=0.01)
    orch = ErasureOrchestrator(
        ledger, bus, SubjectHasher(b"k" * 32), verifier=Verifier({store.name: [check]})
    )
    passes: list[float] = []
    tick = orch.tick

    def counted_tick(now: datetime | None = None) -> dict[str, int]:
        passes.append(time.monotonic())
        return tick(now)

    orch.tick = counted_tick  # type: ignore[method-assign]
    stop = threading.Event()
    runner = threading.Thread(
        target=orch.run, args=(stop,), kwargs={"interval_s": 60.0, "poll_s": 0.02}
    )
    runner.start()
    try:
        store.rows["u1"] = 1
        request = orch.request("u1", legal_basis="gdpr-art17", requested_by="test")
        time.sleep(0.3)
        assert passes == []  # the store has not confirmed: nothing to close yet
        _drain([runtime])
        confirmed = time.monotonic()
        deadline = confirmed + 10
        while ledger.get(request.request_id).status != "completed":
            assert time.monotonic() < deadline, "not closed 10 s after the last confirmation"
            time.sleep(0.02)
        assert verified == ["u1"]
        time.sleep(0.3)
        assert len(passes) == 1  # closed: no further pass until the interval

        # A pass that fails leaves the next one to the interval, not to the next poll.
        def failing_tick(now: datetime | None = None) -> dict[str, int]:
            passes.append(time.monotonic())
            raise RuntimeError("control plane hiccup")

        orch.tick = failing_tick  # type: ignore[method-assign]
        store.rows["u2"] = 1
        orch.request("u2", legal_basis="gdpr-art17", requested_by="test")
        _drain([runtime])
        time.sleep(0.5)
        assert len(passes) == 2
    finally:
        stop.set()
        runner.join(10)
        runtime.close()
        bus.close()
        db.close()


def test_the_requests_a_pass_closes_lose_their_erasure_events_in_one_purge(
    tmp_path: Path, control_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst closes together: every closed request's erasure events leave the log (two
    requests of one user included), the users' signals and other requests' events stay,
    and the log is checkpointed once for all of them, their events found through its
    index (no scan), not once a request."""
    db = open_control_database(control_url)
    ledger = ErasureLedger(db, SubjectSealer(b"k" * 32))
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=2")
    store = Steady()
    runtime = ConsumerRuntime(bus, store.name, store, ledger=ledger, poll_timeout=0.01)
    orch = ErasureOrchestrator(ledger, bus, SubjectHasher(b"k" * 32))
    users = [f"u{i}" for i in range(8)]
    bus.publish([Message(u, b"a signal of " + u.encode()) for u in users])
    requests = [orch.request(u, legal_basis="gdpr-art17", requested_by="test") for u in users]
    requests.append(orch.request("u0", legal_basis="gdpr-art17", requested_by="test"))
    _drain([runtime])
    # A request still waiting for its store keeps its event.
    store.down = True
    waiting = orch.request("u1", legal_basis="gdpr-art17", requested_by="test")
    _drain([runtime])
    scrubs: list[int] = []
    purges: list[int] = []
    scans: list[int] = []
    scrub, purge_indexed, purge_recent = bus._keys.scrub, bus.purge_indexed, bus.purge_recent
    monkeypatch.setattr(bus._keys, "scrub", lambda: (scrubs.append(1), scrub())[1])
    monkeypatch.setattr(
        bus, "purge_indexed", lambda *a: (purges.append(len(a[1])), purge_indexed(*a))[1]
    )
    monkeypatch.setattr(bus, "purge_recent", lambda *a: (scans.append(1), purge_recent(*a))[1])
    assert orch.tick()["completed"] == len(requests)
    # Found through the log's index of its erasure events: no scan of the log.
    assert purges == [len(users)]
    assert scans == []
    assert scrubs == [1]
    erasures = {u: [r for r in _records(bus, u) if r.kind == KIND_ERASURE] for u in users}
    assert all(not found for u, found in erasures.items() if u != "u1")
    assert erasures["u1"]
    assert all(waiting.request_id.encode() in r.value for r in erasures["u1"])
    assert all(
        [r.value for r in _records(bus, u) if r.kind != KIND_ERASURE]
        == [b"a signal of " + u.encode()]
        for u in users
    )
    runtime.close()
    bus.close()
    db.close()


def _records(bus: Any, key: str) -> list[Record]:
    """Every record of ``key`` still in the log."""
    return [r for r in bus.search_partitions([bus.partition_of(key)], bool, bool) if r.key == key]


@pytest.mark.kafka
def test_a_kafka_log_is_dated_by_its_retention_and_one_without_retention_never(
    tmp_path: Path,
) -> None:
    """The platform's participant on a Kafka topic (librdkafka's mock cluster) cannot
    delete the user's records: its confirmation dates them by the topic's retention and
    the export lists them; a log without retention is said to keep them, never dated."""
    import uuid

    from headwater.bus.dead_letters import DeadLetterStore
    from headwater.bus.kafka import MockCluster
    from headwater.dedupe.sqlite import SqliteIdempotencyWindow
    from headwater.runtime.platform import NEVER, PlatformErasure

    db = open_control_database(f"sqlite:///{tmp_path / 'c.db'}")
    window = SqliteIdempotencyWindow(f"sqlite:///{tmp_path / 'w.db'}", window_s=60)
    with MockCluster(brokers=1, partitions=4) as cluster:
        url = f"kafka://{cluster.bootstrap_servers}?topic=t{uuid.uuid4().hex[:8]}&partitions=4"
        bus = open_bus(url)
        try:
            platform = PlatformErasure(bus, DeadLetterStore(db), window)
            ledger = ErasureLedger(db, SubjectSealer(b"k" * 32))
            for p in platform.participants():
                ledger.register_participant(p)
            orch = ErasureOrchestrator(ledger, bus, SubjectHasher(b"k" * 32))
            rid = orch.request("u9", legal_basis="gdpr-art17", requested_by="test").request_id
            event = ErasureEvent(request_id=rid, user_id="u9", requested_at=datetime.now(UTC))
            before = datetime.now(UTC)
            confirmations = {c.participant: c for c in platform.erase_many([event])}
            log = confirmations["bus-log"]
            retention = bus.erasure_capability().retention_seconds
            assert retention is not None
            assert retention > 0
            assert log.method == "retention"
            assert log.rows_remaining is None  # not counted: the records are still there
            gone_by = datetime.fromisoformat(str((log.evidence or {})["gone_by"]))
            # gone_by is written to the millisecond, truncated.
            assert before + timedelta(seconds=retention) - timedelta(milliseconds=1) <= gone_by
            assert gone_by <= datetime.now(UTC) + timedelta(seconds=retention)
            for c in confirmations.values():
                ledger.confirm(c)
            pending = {p["store"]: p for p in orch.export(rid)["not_erasable_at_once"]}
            assert pending["bus-log"]["gone_by"] == (log.evidence or {})["gone_by"]

            # A topic that keeps records forever: never said to be gone at some date.
            forever = msgspec.structs.replace(bus.erasure_capability(), retention_seconds=None)
            bus.erasure_capability = lambda: forever  # type: ignore[method-assign]
            (kept,) = [c for c in platform.erase_many([event]) if c.participant == "bus-log"]
            assert (kept.evidence or {})["gone_by"] == NEVER
        finally:
            bus.close()
    window.close()
    db.close()


def test_the_deadline_warnings_come_at_the_fractions_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``HEADWATER_ERASURE_WARN_AT=0.9,0.25`` warns at 25% and at 90% of the time to the
    deadline, once each; a fraction outside (0, 1) is refused with the variable's name."""
    from headwater.application import Application
    from headwater.config import Settings
    from headwater.errors import ConfigurationError

    monkeypatch.setenv("HEADWATER_ERASURE_WARN_AT", "0.9,0.25")
    settings = Settings.from_env(tmp_path / "hw")
    assert settings.erasure_warn_at == (0.25, 0.9)
    with Application(settings) as app:
        assert tuple(app.orchestrator.warn_at) == (0.25, 0.9)
    monkeypatch.setenv("HEADWATER_ERASURE_WARN_AT", "0.5,1.5")
    with pytest.raises(ConfigurationError, match="HEADWATER_ERASURE_WARN_AT"):
        Settings.from_env(tmp_path / "hw")

    db = open_control_database(f"sqlite:///{tmp_path / 'c.db'}")
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}")
    ledger = ErasureLedger(db, SubjectSealer(b"k" * 32))
    ledger.register_participant(Participant("silent-store", "memory", 3600.0))
    orch = ErasureOrchestrator(
        ledger,
        bus,
        SubjectHasher(b"k" * 32),
        deadline=timedelta(seconds=100),
        warn_at=settings.erasure_warn_at,
    )
    rid = orch.request("u1", legal_basis="gdpr-art17", requested_by="test").request_id
    t0 = datetime.fromisoformat(ledger.get(rid).received_at)

    def warnings() -> list[str]:
        return [a.message for a in orch.alerts if a.status == "warning"]

    orch.tick(t0 + timedelta(seconds=24))
    assert warnings() == []
    orch.tick(t0 + timedelta(seconds=26))
    orch.tick(t0 + timedelta(seconds=50))
    assert len(warnings()) == 1
    assert "25%" in warnings()[0]
    orch.tick(t0 + timedelta(seconds=91))
    orch.tick(t0 + timedelta(seconds=95))
    assert len(warnings()) == 2
    assert "90%" in warnings()[1]
    assert orch.audit(rid, t0 + timedelta(seconds=95))["deadline_warnings"] == [0.25, 0.9]
    bus.close()
    db.close()


def test_the_overdue_list_audits_only_the_requests_the_ledger_picks(
    tmp_path: Path, control_url: str
) -> None:
    """Open requests past their deadline or with a store overdue or failed, newest first,
    picked by one query of the ledger: only they are audited. A deadline has passed only
    after its millisecond; a store past its due time but not yet marked late, and a
    completed request, are not picked."""
    db = open_control_database(control_url)
    ledger = ErasureLedger(db, SubjectSealer(b"k" * 32))
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}")
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    now = t0 + timedelta(hours=1)
    stores = [Participant("a", "memory", 10.0), Participant("b", "memory", 10.0)]
    for minute, (name, deadline) in enumerate(
        [
            ("past", now - timedelta(minutes=30)),
            ("edge", now),
            ("failed", now + timedelta(days=1)),
            ("overdue", now + timedelta(days=1)),
            ("pending", now + timedelta(days=1)),
            ("done", now - timedelta(minutes=30)),
        ]
    ):
        ledger.create(
            request_id=name,
            subject_hash=f"h-{name}",
            user_id=f"u-{name}",
            legal_basis="gdpr-art17",
            received_at=t0 + timedelta(minutes=minute),
            deadline=deadline,
            participants=stores,
        )
    ledger.mark("failed", "a", status="failed")
    ledger.mark("overdue", "b", status="overdue")
    for store in ("a", "b"):
        ledger.mark("done", store, status="confirmed")
    ledger.complete("done", t0 + timedelta(minutes=50))

    orch = ErasureOrchestrator(ledger, bus, SubjectHasher(b"k" * 32))
    audited: list[str] = []
    audit = orch.audit

    def counted_audit(request_id: str, now: datetime | None = None) -> dict[str, Any]:
        audited.append(request_id)
        return audit(request_id, now)

    orch.audit = counted_audit  # type: ignore[method-assign]
    assert [a["request_id"] for a in orch.overdue(now=now)] == ["overdue", "failed", "past"]
    assert audited == ["overdue", "failed", "past"]
    audited.clear()
    later = now + timedelta(microseconds=1)
    listed = [a["request_id"] for a in orch.overdue(now=later)]
    assert listed == ["overdue", "failed", "edge", "past"]
    assert audited == listed
    audited.clear()
    assert [a["request_id"] for a in orch.overdue(limit=2, now=now)] == ["overdue", "failed"]
    assert audited == ["overdue", "failed"]
    bus.close()
    db.close()

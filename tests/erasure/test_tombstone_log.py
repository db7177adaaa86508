"""Tombstones numbered in commit order: a reader reads each one once (``tombstone_log``);
a consumer's poll split into the signals to apply and those of erased users; the
gateway's screen of a batch against them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.bus.base import KIND_SIGNAL, Record
from headwater.contract.signal import Signal, encode_signal
from headwater.contract.validator import SignalValidator
from headwater.control import open_control_database
from headwater.control.base import ControlDatabase
from headwater.erasure.ledger import ErasureLedger
from headwater.erasure.subject import SubjectHasher, SubjectSealer
from headwater.erasure.tombstone_log import write_tombstone
from headwater.erasure.tombstones import TombstoneFilter
from headwater.ingest.erased import ErasedUsers

KEY = b"k" * 32


@pytest.fixture
def ledger(control_url: str) -> Iterator[ErasureLedger]:
    db = open_control_database(control_url)
    yield ErasureLedger(db, SubjectSealer(KEY))
    db.close()


def tombstone(db: ControlDatabase, subject: str, at_ms: int) -> int:
    with db.transaction() as tx:
        return write_tombstone(tx, subject, at_ms, f"req-{subject}-{at_ms}")


class RowsRead:
    """Counts the tombstone rows a database hands back to its caller."""

    def __init__(self, db: ControlDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows = 0
        execute = db.execute

        def counting(sql: str, params: Any = ()) -> Any:
            found = execute(sql, params)
            if "FROM hw_tombstones" in sql:
                self.rows += len(found)
            return found

        monkeypatch.setattr(db, "execute", counting)

    def take(self) -> int:
        rows, self.rows = self.rows, 0
        return rows


def test_a_reader_reads_each_tombstone_once(
    ledger: ErasureLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = ledger._db
    for i in range(40):
        tombstone(db, f"s{i}", 1_000 + i)
    read = RowsRead(db, monkeypatch)
    tombs = TombstoneFilter(ledger, SubjectHasher(KEY))  # the first read: all of them
    assert len(tombs.erased_at) == 40
    assert read.take() == 40
    tombs.refresh(force=True)
    assert read.take() == 0  # nothing new: nothing read
    tombstone(db, "s40", 2_000)
    tombstone(db, "s41", 2_001)
    tombs.refresh(force=True)
    assert read.take() == 2
    assert tombs.erased_at["s40"] == 2_000
    assert tombs.erased_at["s41"] == 2_001
    assert len(tombs.erased_at) == 42


def test_a_re_erasure_reaches_a_reader_that_read_the_first(ledger: ErasureLedger) -> None:
    db = ledger._db
    first = tombstone(db, "s", 1_000)
    tombs = TombstoneFilter(ledger, SubjectHasher(KEY))
    assert tombs.erased_at == {"s": 1_000}
    second = tombstone(db, "s", 5_000)  # the user came back and was erased again
    assert second > first
    tombs.refresh(force=True)
    assert tombs.erased_at == {"s": 5_000}


def test_tombstones_written_before_they_were_numbered_are_read_first(
    ledger: ErasureLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = ledger._db
    with db.transaction() as tx:  # as an earlier release wrote them: no number
        tx.execute(
            "INSERT INTO hw_tombstones (subject_hash, erased_at_ms, request_id) VALUES (?, ?, ?)",
            ("old", 500, "req-old"),
        )
    tombstone(db, "new", 900)
    read = RowsRead(db, monkeypatch)
    tombs = TombstoneFilter(ledger, SubjectHasher(KEY))
    assert tombs.erased_at == {"old": 500, "new": 900}
    assert read.take() == 2
    tombs.refresh(force=True)
    assert read.take() == 0


def test_the_ledger_numbers_the_tombstone_of_each_request(ledger: ErasureLedger) -> None:
    tombs = TombstoneFilter(ledger, SubjectHasher(KEY))
    assert tombs.erased_at == {}
    hasher = SubjectHasher(KEY)
    received = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)
    for n, user in enumerate(("u1", "u2")):
        ledger.create(
            request_id=f"r{n}",
            subject_hash=hasher(user),
            user_id=user,
            legal_basis="gdpr_art17",
            received_at=received + timedelta(seconds=n),
            deadline=received + timedelta(days=30),
            participants=[],
        )
    tombs.refresh(force=True)
    assert tombs.erased_at == {
        hasher("u1"): int(received.timestamp() * 1000),
        hasher("u2"): int(received.timestamp() * 1000) + 1_000,
    }


@pytest.mark.postgres
def test_tombstones_commit_in_the_order_of_their_numbers(postgres_url: str) -> None:
    """A writer that took a number waits for the one before it to commit: a reader never
    sees a number while a lower one is still to come (else it would skip that one)."""
    first_db = open_control_database(postgres_url)
    ErasureLedger(first_db, SubjectSealer(KEY))  # the schema
    second_db = open_control_database(postgres_url)
    reader_db = open_control_database(postgres_url)
    reader = TombstoneFilter(ErasureLedger(reader_db, SubjectSealer(KEY)), SubjectHasher(KEY))
    numbers: dict[str, int] = {}
    second_done = threading.Event()

    def second() -> None:
        numbers["b"] = tombstone(second_db, "b", 2_000)
        second_done.set()

    try:
        with first_db.transaction() as tx:
            numbers["a"] = write_tombstone(tx, "a", 1_000, "req-a")
            writer = threading.Thread(target=second)
            writer.start()
            time.sleep(0.5)
            assert not second_done.is_set()  # waits for the first's counter row
            reader.refresh(force=True)
            assert reader.erased_at == {}
        writer.join(10)
        assert second_done.is_set()
        assert numbers["a"] < numbers["b"]
        reader.refresh(force=True)
        assert reader.erased_at == {"a": 1_000, "b": 2_000}
    finally:
        for db in (first_db, second_db, reader_db):
            db.close()


def signal_record(offset: int, user: str, at_ms: int) -> Record:
    sig = Signal(
        event_id=f"e{offset}",
        event_type="view",
        user_id=user,
        surface="web",
        timestamp=datetime.fromtimestamp(at_ms / 1000, UTC),
        item_id="i1",
    )
    return Record(0, offset, user, KIND_SIGNAL, encode_signal(sig), 0)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.tuples(st.sampled_from("abcde"), st.integers(0, 20)), max_size=40),
    erased=st.dictionaries(st.sampled_from("abcde"), st.integers(0, 20)),
)
def test_a_poll_splits_as_each_record_would_be_dropped(
    events: list[tuple[str, int]], erased: dict[str, int]
) -> None:
    """``split`` keeps the records of users not erased and those after their erasure, in
    order, as :meth:`drops` decides one record at a time, and counts the others."""
    records = [signal_record(i, user, 1_000 * t) for i, (user, t) in enumerate(events)]
    tombs = TombstoneFilter(None, SubjectHasher(KEY))
    for user, t in erased.items():
        tombs.add(user, 1_000 * t)
    kept, dropped = tombs.split(records)
    gone = [user in erased and t <= erased[user] for user, t in events]
    assert kept == [r for r, g in zip(records, gone, strict=True) if not g]
    assert dropped == [r for r, g in zip(records, gone, strict=True) if g]
    assert tombs.dropped == sum(gone)
    one_by_one = TombstoneFilter(None, SubjectHasher(KEY))
    for user, t in erased.items():
        one_by_one.add(user, 1_000 * t)
    assert kept == [r for r in records if not one_by_one.drops(r)]
    if not any(gone):
        assert kept is records  # nothing dropped: the poll as it came


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(st.tuples(st.sampled_from("abcde"), st.integers(0, 20)), max_size=30),
    erased=st.dictionaries(st.sampled_from("abcde"), st.integers(0, 20)),
    policy=st.sampled_from(["accept", "reject"]),
)
def test_the_gateway_refuses_exactly_the_events_its_policy_names(
    validator: SignalValidator,
    events: list[tuple[str, int]],
    erased: dict[str, int],
    policy: str,
) -> None:
    """``accept``: an erased user's events up to the erasure are refused; ``reject``:
    all of them. The rest pass in order, each refusal at its event's index."""
    base = datetime(2026, 12, 5, tzinfo=UTC)
    body = [
        {
            "event_id": f"e{i}",
            "event_type": "view",
            "user_id": user,
            "surface": "web",
            "item_id": "i1",
            "timestamp": (base + timedelta(seconds=t)).isoformat(),
            "payload": {},
        }
        for i, (user, t) in enumerate(events)
    ]
    result = validator.validate_events(body, now=base + timedelta(seconds=30))
    assert len(result.accepted) == len(events)
    tombs = TombstoneFilter(None, SubjectHasher(KEY))
    base_ms = int(base.timestamp() * 1000)
    for user, t in erased.items():
        tombs.add(user, base_ms + 1_000 * t)
    screened = ErasedUsers(tombs, policy).screen(result)  # type: ignore[arg-type]
    refused = [user in erased and (policy == "reject" or t <= erased[user]) for user, t in events]
    assert screened.accepted_indices == [i for i, r in enumerate(refused) if not r]
    assert [e.event_id for e in screened.accepted] == [
        f"e{i}" for i, r in enumerate(refused) if not r
    ]
    assert [(r.index, r.rule) for r in screened.rejections] == [
        (i, "user_erased") for i, r in enumerate(refused) if r
    ]
    if not any(refused):
        assert screened is result

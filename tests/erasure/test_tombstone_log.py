"""Tombstones numbered in commit order: a reader reads each one once (``tombstone_log``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from headwater.control import open_control_database
from headwater.control.base import ControlDatabase
from headwater.erasure.ledger import ErasureLedger
from headwater.erasure.subject import SubjectHasher, SubjectSealer
from headwater.erasure.tombstone_log import write_tombstone
from headwater.erasure.tombstones import TombstoneFilter

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
    from datetime import UTC, datetime, timedelta

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

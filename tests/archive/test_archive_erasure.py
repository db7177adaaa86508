"""Erasure from the archive: Delta DELETE, verifying scan, ledger, vacuum, honest times."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from deltalake import DeltaTable

from headwater._time import format_time
from headwater.archive import (
    ARCHIVE_SCHEMA,
    ArchiveConsumer,
    ArchiveTable,
    ErasureLedger,
    signals_to_arrow,
)
from headwater.bus import Message, open_bus
from headwater.contract.signal import encode_signal
from headwater.erasure.events import Confirmation, ErasureEvent, encode_erasure
from headwater.runtime import ConsumerRuntime
from tests.archive._history import SUBJECT, history, records

VICTIM = "u001"


def _erasure(request_id: str = "req-1", user: str = VICTIM) -> ErasureEvent:
    return ErasureEvent(request_id=request_id, user_id=user, requested_at=datetime.now(UTC))


def _files_naming(root: str, text: str) -> list[str]:
    hits = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if text.encode() in path.read_bytes():
                hits.append(str(path))
    return hits


def _keeping_files(archive_url: str) -> ArchiveConsumer:
    """A consumer with a week's retention and no scheduled vacuum: old files stay."""
    return ArchiveConsumer(
        ArchiveTable(archive_url),
        ErasureLedger(archive_url),
        SUBJECT,
        retention_hours=168,
        vacuum_interval_s=None,
    )


def test_erase_deletes_verifies_records_partitions(archive_url: str) -> None:
    consumer = _keeping_files(archive_url)
    sent = history(600, days=6)
    consumer.handle(records(sent))
    mine = [s for s in sent if s.user_id == VICTIM]
    assert mine, "the history must hold the victim"
    (conf,) = consumer.erase(_erasure())
    assert conf.ok
    assert conf.method == "delta delete"
    assert conf.rows_removed == len(mine)
    assert conf.rows_remaining == 0
    days = sorted({s.timestamp.date().isoformat() for s in mine})
    assert conf.evidence["partitions"] == days
    deleted_in = conf.evidence["table_version"]
    commits = {h["version"]: h for h in DeltaTable(consumer.table.uri).history()}
    assert commits[deleted_in]["operation"] == "DELETE"
    assert commits[deleted_in]["headwater.erasure.request_id"] == "req-1"
    # Independent check: a fresh reader of the current version finds none of the user's rows.
    current = DeltaTable(consumer.table.uri).to_pyarrow_table(columns=["user_id"])
    assert VICTIM not in set(current.column("user_id").to_pylist())
    assert current.num_rows == len(sent) - len(mine)
    entry = consumer.ledger.erasure("req-1")
    assert entry is not None
    assert entry.partitions == days
    assert entry.rows_removed == len(mine)
    # Even with a week's retention, the files that held the rows are gone at once, and
    # no byte of the table's directory (data files, Delta log) names the user.
    assert conf.evidence["files_removed"] > 0
    assert conf.evidence["predicate"].startswith("by subject")
    assert _files_naming(archive_url, VICTIM) == []
    assert _files_naming(archive_url, SUBJECT(VICTIM)) != []  # the predicate's keyed hash
    assert consumer.ledger.physically_removed_at(entry) == entry.erased_at


def test_no_version_before_the_erasure_can_be_read_back(archive_url: str) -> None:
    c = ArchiveConsumer(
        ArchiveTable(archive_url),
        ErasureLedger(archive_url),
        SUBJECT,
        retention_hours=168,
        vacuum_interval_s=3600,
    )
    c.handle(records(history(300, days=3)))
    c.table.compact(sorted(c.table.days()))  # old, unreferenced files that hold the user
    before = c.table.version()
    (conf,) = c.erase(_erasure())
    entry = c.ledger.erasure("req-1")
    assert entry is not None
    assert conf.evidence["physically_removed_at"] == format_time(entry.erased_at)
    # Time travel to before the erasure fails: its files are gone.
    with pytest.raises(Exception, match=r"(?i)not found|no such file|failed|error"):
        DeltaTable(c.table.uri, version=before).to_pyarrow_table(columns=["user_id"])
    assert _files_naming(archive_url, VICTIM) == []
    # Other users' rows are intact, and the retention's vacuum still runs for other files.
    assert c.table.read(["user_id"]).num_rows == 300 - conf.rows_removed
    c.vacuum(retention_hours=0)
    assert c.table.read(["user_id"]).num_rows == 300 - conf.rows_removed


def test_rows_written_before_the_subject_column_are_erased_without_naming_the_user(
    archive_url: str,
) -> None:
    legacy = ARCHIVE_SCHEMA.remove(ARCHIVE_SCHEMA.get_field_index("subject"))
    old = ArchiveTable(archive_url, schema=legacy)
    rows = signals_to_arrow(history(300, days=3), SUBJECT).drop_columns(["subject"])
    old.append(rows)
    c = _keeping_files(archive_url)
    (conf,) = c.erase(_erasure())
    assert conf.rows_removed == sum(1 for u in rows.column("user_id").to_pylist() if u == VICTIM)
    assert conf.evidence["days_rehashed"] == conf.evidence["partitions"]
    assert _files_naming(archive_url, VICTIM) == []
    left = c.table.read(["user_id", "subject"]).to_pylist()
    assert len(left) == 300 - conf.rows_removed
    rehashed = set(conf.evidence["days_rehashed"])
    days = c.table.read(["date", "subject"]).to_pylist()
    assert all(r["subject"] is not None for r in days if r["date"] in rehashed)


def test_erase_again_is_harmless_and_keeps_partitions(consumer: ArchiveConsumer) -> None:
    consumer.handle(records(history(300, days=3)))
    (first,) = consumer.erase(_erasure())
    (second,) = consumer.erase(_erasure())  # the orchestrator retried
    assert second.ok
    assert second.rows_removed == 0
    assert second.rows_remaining == 0
    entry = consumer.ledger.erasure("req-1")
    assert entry is not None
    assert entry.partitions == first.evidence["partitions"]
    (unknown,) = consumer.erase(_erasure("req-2", "nobody"))
    assert unknown.ok
    assert unknown.rows_removed == 0
    assert unknown.evidence["partitions"] == []


def test_erasure_on_the_bus_after_signals_erases_them(tmp_path: Path, archive_url: str) -> None:
    bus_url = f"sqlite:///{tmp_path / 'bus.db'}"
    bus = open_bus(bus_url)
    sent = history(300, days=3)
    bus.publish([Message(s.user_id, encode_signal(s)) for s in sent])
    bus.publish([Message(VICTIM, encode_erasure(_erasure()), "erasure")])
    confirmations: list[Confirmation] = []
    c = ArchiveConsumer(
        ArchiveTable(archive_url),
        ErasureLedger(archive_url),
        SUBJECT,
        retention_hours=0,
        vacuum_interval_s=None,
    )
    rt = ConsumerRuntime(
        open_bus(bus_url), "archive", c, batch_size=1000, on_confirmation=confirmations.append
    )
    rt.run(install_signal_handlers=False, idle_exit=True)
    assert [x.participant for x in confirmations] == ["archive"]
    assert confirmations[0].rows_removed == sum(s.user_id == VICTIM for s in sent)
    users = set(c.table.read(["user_id"]).column("user_id").to_pylist())
    assert VICTIM not in users
    assert len(users) > 5
    bus.close()


def test_a_run_of_erasures_is_one_delete_with_a_confirmation_each(archive_url: str) -> None:
    consumer = _keeping_files(archive_url)
    sent = history(600, days=6)
    consumer.handle(records(sent))
    users = sorted({s.user_id for s in sent})[:3]
    events = [_erasure(f"req-{u}", u) for u in users] + [_erasure("req-again", users[0])]
    version = consumer.table.version()
    confs = consumer.erase_many(events)
    assert [c.request_id for c in confs] == [e.request_id for e in events]
    for user, conf in zip(users, confs, strict=False):
        mine = [s for s in sent if s.user_id == user]
        assert conf.ok
        assert conf.rows_removed == len(mine)
        assert conf.evidence["partitions"] == sorted({s.timestamp.date().isoformat() for s in mine})
    assert confs[-1].rows_removed == 0  # the second request for a user: already gone
    assert consumer.table.version() == version + 1  # one DELETE commit for the run
    # One ledger commit for the run too, read by another process's ledger as it grows,
    # and merged rows counted once after the ledger's files are compacted.
    other = ErasureLedger(archive_url)
    assert other.erasure("req-later") is None
    ledger_version = consumer.ledger.table.version()
    consumer.erase_many([_erasure("req-later", users[1])])
    assert consumer.ledger.table.version() == ledger_version + 1
    for conf in confs[:3]:
        entry = other.erasure(conf.request_id)
        assert entry is not None
        assert entry.rows_removed == conf.rows_removed
    assert other.erasure("req-later") is not None
    DeltaTable(consumer.ledger.table.uri).optimize.compact()
    assert len(other.table.data_files()) == 1
    entry = other.erasure(confs[0].request_id)
    assert entry is not None
    assert entry.rows_removed == confs[0].rows_removed
    current = DeltaTable(consumer.table.uri).to_pyarrow_table(columns=["user_id"])
    left = set(current.column("user_id").to_pylist())
    assert not left & set(users)
    assert current.num_rows == len([s for s in sent if s.user_id not in users])

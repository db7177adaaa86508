"""The SQLite bus's kind member: stored batches without a record of its kinds are read
past undecoded, their records not read at all (the log's index of rare kinds names the
batches that hold them)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from headwater.bus import Message
from headwater.bus import sqlite as sqlite_bus
from headwater.bus.sqlite import SqliteBus


def test_batches_without_the_kind_are_not_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = SqliteBus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=1")
    for batch in range(20):
        bus.publish([Message(f"u{i}", f"signal {batch}.{i}".encode()) for i in range(50)])
    # A signal whose value holds the kind's bytes is neither decoded nor handed over.
    bus.publish([Message("u1", b"\xa7erasure in a payload")])
    bus.publish([Message("u2", b"e", kind="erasure"), Message("u2", b"after")])
    decoded: list[int] = []
    decode = sqlite_bus.DECODE_BATCH

    def counting(blob: Any) -> Any:
        records = decode(blob)
        decoded.append(len(records))
        return records

    monkeypatch.setattr(sqlite_bus, "DECODE_BATCH", counting)
    member = bus.kind_consumer("erasures", ["erasure"])
    got = member.poll(10_000, 0.5)
    assert [(r.key, r.value) for r in got] == [("u2", b"e")]
    assert member.covered() == {0: 20 * 50 + 3}
    assert decoded == [2]  # the erasure's batch only
    member.close()
    bus.close()


def test_the_records_of_batches_the_index_does_not_name_are_not_read(tmp_path: Path) -> None:
    # Bytes that are no batch at all, with the kind's name in them: a member that read
    # them would fail to decode them.
    path = tmp_path / "bus.db"
    bus = SqliteBus(f"sqlite:///{path}?partitions=1")
    bus.publish([Message("u1", b"s")])
    bus.publish([Message("u2", b"e", kind="erasure")])
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "UPDATE hw_bus_log SET records = ? WHERE first_offset = 0",
            (b"\xa7erasure" + b"\xc1" * 64,),
        )
    member = bus.kind_consumer("erasures", ["erasure"])
    got = member.poll(100, 0.5)
    assert [(r.key, r.value) for r in got] == [("u2", b"e")]
    assert member.covered() == {0: 2}
    member.close()
    bus.close()


def test_a_log_written_before_the_index_is_indexed_once_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    url = f"sqlite:///{path}?partitions=2"
    bus = SqliteBus(url)
    bus.publish([Message("u1", b"s"), Message("u2", b"e2", kind="erasure")])
    bus.publish([Message("u3", b"e3", kind="erasure"), Message("u4", b"s4")])
    bus.close()
    # As a release before the index left the file: no entries, no mark.
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("DELETE FROM hw_bus_rare")
        db.execute("DELETE FROM hw_bus_meta WHERE name = 'rare_index'")
    bus = SqliteBus(url)
    member = bus.kind_consumer("erasures", ["erasure"])
    got = [(r.key, r.value) for _ in range(3) for r in member.poll(100, 0.1)]
    member.close()
    bus.close()
    assert sorted(got) == [("u2", b"e2"), ("u3", b"e3")]
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT kind, key FROM hw_bus_rare ORDER BY key").fetchall() == [
            ("erasure", "u2"),
            ("erasure", "u3"),
        ]
        # Marked complete: the next opening does not read the log again.
        assert db.execute("SELECT value FROM hw_bus_meta WHERE name = 'rare_index'").fetchone()

"""The SQLite bus's log layout: stored batches in a rowid table, and a log an earlier
release created WITHOUT ROWID still read, written, purged and scrubbed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from headwater._idsearch import sqlite_copies
from headwater.bus import Message, committed_positions
from headwater.bus.base import KIND_ERASURE, KIND_SIGNAL, Record
from headwater.bus.sqlite import SqliteBus

# hw_bus_log as releases before this one created it.
_EARLIER_LOG = """CREATE TABLE hw_bus_log (
    partition INTEGER NOT NULL,
    first_offset INTEGER NOT NULL,
    last_offset INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    records BLOB NOT NULL,
    PRIMARY KEY (partition, first_offset)
) WITHOUT ROWID"""


def _log_sql(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'hw_bus_log'").fetchone()
    finally:
        conn.close()
    return str(sql)


def test_a_new_log_keeps_its_batches_in_a_rowid_table(tmp_path: Path) -> None:
    # A stored batch is tens of KB: as a WITHOUT ROWID row, every interior cell of the
    # B-tree holds one whole, and SQLite copies it, overflow pages and all, to compare
    # a key with it, at each level of every insert and read.
    path = tmp_path / "bus.db"
    SqliteBus(f"sqlite:///{path}?partitions=2").close()
    sql = _log_sql(path)
    assert "WITHOUT ROWID" not in sql.upper(), sql


@pytest.mark.parametrize("earlier", [True, False], ids=["created-without-rowid", "new"])
def test_a_log_of_either_layout_is_read_purged_and_scrubbed(tmp_path: Path, earlier: bool) -> None:
    path = tmp_path / "bus.db"
    if earlier:
        conn = sqlite3.connect(path)
        conn.execute(_EARLIER_LOG)
        conn.close()
    bus = SqliteBus(f"sqlite:///{path}?partitions=2")
    assert ("WITHOUT ROWID" in _log_sql(path).upper()) == earlier  # a log keeps its layout
    values = {f"user-{i}": [f"user-{i}/{n}".encode() * 40 for n in range(3)] for i in range(50)}
    for n in range(3):
        bus.publish([Message(key, vals[n]) for key, vals in values.items()])
    consumer = bus.consumer("g")
    got: list[bytes] = []
    while len(got) < 150:
        records = consumer.poll(40, 1.0)
        assert records, "the log ended early"
        got += [r.value for r in records]
        consumer.commit(committed_positions(records))
    assert sorted(got) == sorted(v for vals in values.values() for v in vals)
    assert bus.purge_key("user-7") == 3
    assert bus.count_key("user-7") == 0
    assert bus.count_key("user-8") == 3
    assert sqlite_copies(path, ["user-7"]) == 0  # purged and scrubbed
    assert sqlite_copies(path, ["user-8"]) > 0  # the scan sees what is kept
    consumer.close()
    bus.close()


def test_a_stored_batch_holds_each_record_as_a_record_encodes(tmp_path: Path) -> None:
    # The log writes plain arrays, no Record per message: the bytes must be the same.
    path = tmp_path / "bus.db"
    bus = SqliteBus(f"sqlite:///{path}?partitions=1")
    bus.publish([Message("ann", b"\x00v1"), Message("bob", b"v2", KIND_ERASURE)])
    conn = sqlite3.connect(path)
    ((ts, blob),) = conn.execute("SELECT ts_ms, records FROM hw_bus_log").fetchall()
    conn.close()
    expected = [
        Record(0, 0, "ann", KIND_SIGNAL, b"\x00v1", ts),
        Record(0, 1, "bob", KIND_ERASURE, b"v2", ts),
    ]
    assert blob == msgspec.msgpack.encode(expected)
    bus.close()


def test_a_publish_to_more_partitions_than_a_statement_binds_writes_every_batch(
    tmp_path: Path,
) -> None:
    # Each partition a publish touches is five parameters of one statement. SQLite
    # builds bind at most 999 (before 3.32), 32,766 or 250,000 (Debian's): the statements
    # are cut at the connection's own bound, here the smallest.
    path = tmp_path / "bus.db"
    bus = SqliteBus(f"sqlite:///{path}?partitions=700")
    bus._db.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    messages = [Message(f"u{i}", str(i).encode()) for i in range(5_000)]
    bus.publish(messages)
    bus.publish(messages[:3])
    conn = sqlite3.connect(path)
    batches = conn.execute("SELECT COUNT(*), COUNT(DISTINCT partition) FROM hw_bus_log").fetchone()
    ends = dict(conn.execute("SELECT partition, next_offset FROM hw_bus_ends").fetchall())
    conn.close()
    touched = {bus.partition_of(m.key) for m in messages}
    assert len(touched) > 999 // 5
    assert batches == (
        len(touched) + len({bus.partition_of(m.key) for m in messages[:3]}),
        len(touched),
    )
    expected = dict.fromkeys(range(700), 0)
    for m in messages + messages[:3]:
        expected[bus.partition_of(m.key)] += 1
    assert ends == expected
    bus.close()

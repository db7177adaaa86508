"""A group reads on past what the retention dropped (SQLite and NATS), and a SQLite bus
consumer reads on while another connection shrinks the file under it."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from headwater.bus import Message, open_bus
from headwater.bus.base import KIND_SIGNAL, Record
from headwater.bus.nats import delete_bus
from headwater.bus.sqlite import SqliteBus
from tests.conftest import server_url


def test_a_consumer_reads_on_while_another_connection_shrinks_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    bus = SqliteBus(f"sqlite:///{path}?partitions=1")
    value = b"x" * 2_000
    for first in range(0, 20_000, 500):
        bus.publish(
            [Message(f"u{i % 50}", value + str(i).encode()) for i in range(first, first + 500)]
        )
    consumer = bus.consumer("g")
    got = consumer.poll(max_records=1_000, timeout=1.0)
    assert [r.offset for r in got] == list(range(1_000))
    consumer.commit({0: 1_000})
    big = path.stat().st_size
    # Another connection drops all but the last 1,000 records and rebuilds the file
    # smaller, as the erasure's rebuild does.
    other = sqlite3.connect(path)
    other.execute("DELETE FROM hw_bus_log WHERE last_offset < 19000")
    other.commit()
    other.execute("VACUUM")
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    other.close()
    assert path.stat().st_size < big / 5
    rest = []
    while batch := consumer.poll(max_records=5_000, timeout=0.2):
        rest.extend(batch)
    assert [r.offset for r in rest] == list(range(19_000, 20_000))
    assert all(r.value == value + str(r.offset).encode() for r in rest)
    consumer.close()
    bus.close()


def test_a_group_behind_the_retention_reads_on_from_the_first_record_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A group that fell further behind than one poll's records, past what the retention
    kept, reads on from the first record kept instead of waiting for ever; one whose poll
    reaches past the gap reads the same. Each says which records it never read."""
    bus = SqliteBus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=1", retention_s=0.5)
    readers = [
        (bus.consumer("g"), 500),
        (bus.kind_consumer("k", kinds={KIND_SIGNAL}), 500),
        (bus.consumer("wide"), 10_000),  # the gap is inside one poll's range
    ]
    for _ in range(10):
        bus.publish([Message("u", b"old") for _ in range(500)])
    time.sleep(0.6)
    bus.publish([Message("u", b"kept") for _ in range(3)])
    assert bus.enforce_retention() == 10
    for reader, size in readers:
        got = reader.poll(max_records=size, timeout=0.5)
        assert [(r.offset, r.value) for r in got] == [(5_000 + i, b"kept") for i in range(3)]
        reader.commit({0: 5_003})
        assert reader.poll(max_records=size, timeout=0.1) == []
    assert caplog.text.count("records 0 to 4999 were dropped by the retention") == 3
    assert [lag.lag_events for lag in bus.lag("g")] == [0]
    for reader, _size in readers:
        reader.close()
    bus.close()


@pytest.mark.nats
def test_a_nats_group_behind_the_retention_reads_on_from_the_first_record_kept() -> None:
    """The same on NATS JetStream: the stream's max age drops the records, and the group's
    next read starts at the first message kept."""
    url = f"{server_url('nats')}?topic=t{uuid.uuid4().hex[:10]}&partitions=1&heartbeat=0.1s"
    bus = open_bus(url, retention_s=1.0)
    try:
        consumer = bus.consumer("g")
        assert consumer.poll(max_records=10, timeout=1.0) == []
        consumer.commit({0: 0})
        consumer.close()
        for _ in range(4):
            bus.publish([Message("u", b"old") for _ in range(500)])
        time.sleep(2.5)  # past the max age; the server expires them within a second
        bus.publish([Message("u", b"kept") for _ in range(3)])
        consumer = bus.consumer("g")
        got: list[Record] = []
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            got += consumer.poll(max_records=500, timeout=1.0)
        assert [r.value for r in got] == [b"kept"] * 3
        consumer.close()
    finally:
        bus.close()
        delete_bus(url)

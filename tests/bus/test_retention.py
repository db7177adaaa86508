"""A group reads on past what the retention dropped (SQLite and NATS), and a SQLite bus
consumer reads on while another connection shrinks the file under it."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from headwater.bus import Message, open_bus
from headwater.bus.base import KIND_SIGNAL, Record
from headwater.bus.nats import delete_bus
from headwater.bus.sqlite import SqliteBus
from headwater.metrics import REGISTRY
from tests.conftest import server_url


def expired_unread(group: str, partition: int = 0) -> float:
    """``headwater_bus_records_expired_unread_total`` of a group's partition."""
    labels = {"group": group, "partition": str(partition)}
    return REGISTRY.get_sample_value("headwater_bus_records_expired_unread_total", labels) or 0.0


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
    bus.publish([Message("u", b"kept") for _ in range(3)])  # drops the ten old batches
    assert bus.enforce_retention() == 0
    # Behind it: the three records kept, not the 5,000 that cannot be read any more.
    assert [lag.lag_events for lag in bus.lag("g")] == [3]
    before = {group: expired_unread(group) for group in ("g", "k", "wide")}
    for reader, size in readers:
        got = reader.poll(max_records=size, timeout=0.5)
        assert [(r.offset, r.value) for r in got] == [(5_000 + i, b"kept") for i in range(3)]
        reader.commit({0: 5_003})
        assert reader.poll(max_records=size, timeout=0.1) == []
    assert caplog.text.count("records 0 to 4999 were dropped by the retention") == 3
    assert {group: expired_unread(group) - n for group, n in before.items()} == {
        "g": 5_000,
        "k": 5_000,
        "wide": 5_000,
    }
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


class _Message:
    """What ``confluent_kafka`` hands a consumer, reduced to what headwater reads."""

    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def key(self) -> bytes:
        return b"u"

    def value(self) -> bytes:
        return b"v"

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000)


class _Committed:
    """The group's committed offsets, as ``Consumer.committed`` answers them."""

    def __init__(self, offsets: dict[int, int]) -> None:
        self.offsets = offsets
        self.asked: list[int] = []

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        import confluent_kafka as ck

        self.asked += [tp.partition for tp in partitions]
        return [
            ck.TopicPartition(tp.topic, tp.partition, self.offsets.get(tp.partition, -1001))
            for tp in partitions
        ]


@pytest.mark.kafka
def test_a_kafka_member_counts_the_records_the_retention_removed_before_it_read_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Kafka's offsets are contiguous (idempotent producers, no transactions, no
    compaction): a member whose first record after an assignment lies past the group's
    committed offset, or whose next record jumps, reads on and counts the records between.
    A group without a committed offset starts where the retention left it: nothing is
    counted."""
    from headwater.bus._kafka_consumer import KafkaConsumer

    member = KafkaConsumer.__new__(KafkaConsumer)
    member.group, member.member, member._topic = "kg", "m1", "t"
    member._timeout_s = 1.0
    member._assigned, member._next = set(), {}
    fake = _Committed({0: 100})
    member._consumer = fake
    member._on_assign(None, [_tp(0), _tp(1)])
    before = {p: expired_unread("kg", p) for p in (0, 1)}

    def read(*at: tuple[int, int]) -> list[int]:
        return [r.offset for r in member._records([_Message(p, o) for p, o in at])]

    assert read((0, 100), (0, 101), (1, 7_000)) == [100, 101, 7_000]  # 1: no commit
    assert expired_unread("kg", 0) - before[0] == 0
    assert read((0, 160), (1, 7_001)) == [160, 7_001]  # 102 to 159 aged out
    assert expired_unread("kg", 0) - before[0] == 58
    assert expired_unread("kg", 1) - before[1] == 0
    assert "records 102 to 159 were dropped by the retention" in caplog.text
    # Assigned again (a rebalance): the committed offset is read again, once.
    fake.offsets[0] = 150
    member._on_assign(None, [_tp(0)])
    asked = len(fake.asked)
    assert read((0, 150), (0, 151)) == [150, 151]
    assert len(fake.asked) == asked + 1
    assert expired_unread("kg", 0) - before[0] == 58


def _tp(partition: int) -> Any:
    import confluent_kafka as ck

    return ck.TopicPartition("t", partition)


def test_each_publish_drops_at_most_twice_the_batches_it_adds_oldest_first(
    tmp_path: Path,
) -> None:
    """A publish drops expired batches in its own transaction, a bounded number at a
    time (a sweep of everything expired held the writer for seconds), oldest first, so
    that a log whose retention passed sheds as fast as it grows."""
    from headwater.bus import sqlite as bus_sqlite

    bus = SqliteBus(f"sqlite:///{tmp_path / 'bus.db'}?partitions=1", retention_s=60)

    def kept() -> list[int]:
        return [
            int(first)
            for (first,) in bus._db.read(
                "SELECT first_offset FROM hw_bus_log ORDER BY first_offset", ()
            )
        ]

    for _ in range(40):
        bus.publish([Message("u", b"old")])
    with bus._db.write() as conn:  # two minutes old: past the retention
        conn.execute("UPDATE hw_bus_log SET ts_ms = ts_ms - 120000")
    bus.close()
    # A gateway that starts over the log: the publisher above knew its batches recent.
    bus = SqliteBus(f"sqlite:///{tmp_path / 'bus.db'}", retention_s=60)
    assert len(kept()) == 40
    bus.publish([Message("u", b"new")])
    # One batch added: up to RETENTION_DROP_MIN (16) dropped, the oldest.
    assert kept() == list(range(bus_sqlite.RETENTION_DROP_MIN, 41))
    bus.publish([Message(f"u{i}", b"new") for i in range(3)])
    assert kept() == list(range(2 * bus_sqlite.RETENTION_DROP_MIN, 42))
    bus.publish([Message("u", b"new")])
    assert kept() == [40, 41, 44], "the rest of the expired went, nothing newer"
    bus.close()

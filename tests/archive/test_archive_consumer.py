"""The archive consumer on a real Delta table: layout, partitions, idempotent replays."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headwater.archive import (
    ARCHIVE_SCHEMA,
    ArchiveConsumer,
    ArchiveTable,
    ErasureLedger,
    signals_to_arrow,
)
from headwater.archive import consumer as consumer_module
from headwater.archive._buffered import BufferedBus
from headwater.archive.settings import ArchiveSettings
from headwater.bus import Message, Record, open_bus
from headwater.bus.base import KIND_SIGNAL
from headwater.contract.definition import RegisteredEventType
from headwater.contract.loader import default_definitions
from headwater.contract.signal import encode_signal
from headwater.contract.validator import SignalValidator
from headwater.demo.traffic import Traffic
from headwater.errors import FencedError
from headwater.runtime import ConsumerRuntime
from tests.archive._history import START, SUBJECT, history, records, signal


def test_rows_land_in_day_partitions_with_extracted_columns(consumer: ArchiveConsumer) -> None:
    sent = history(500, days=5)
    consumer.handle(records(sent))
    table = consumer.table.read()
    assert table.num_rows == 500
    assert table.schema.names == ARCHIVE_SCHEMA.names
    days = consumer.table.days()
    expected = Counter(s.timestamp.date().isoformat() for s in sent)
    assert {d: f.rows for d, f in days.items()} == dict(expected)
    for day in days.values():
        assert all(f"/date={day.day}/" in f for f in day.files)
    rows = {r["event_id"]: r for r in table.to_pylist()}
    for s in sent[:50]:
        row = rows[s.event_id]
        assert row["user_id"] == s.user_id
        assert row["item_id"] == s.item_id
        assert row["timestamp"] == s.timestamp
        assert row["date"] == s.timestamp.date().isoformat()
        assert row["category"] == s.payload.get("category")
        assert row["price"] == s.payload.get("price")
        assert row["quantity"] == s.payload.get("quantity")
        assert json.loads(row["payload"] or "{}") == s.payload


def test_a_days_small_files_are_merged_as_commits_accumulate(consumer: ArchiveConsumer) -> None:
    # Under load a commit per erasure makes small files by the second; every DELETE and
    # every reader opens each of them: the consumer merges them well before maintenance.
    sent = history(40 * 25, days=1)
    offsets: dict[int, int] = {}
    for i in range(40):
        consumer.handle(records(sent[i * 25 : (i + 1) * 25], offsets=offsets))
    (day,) = consumer.table.days().values()
    assert len(day.files) < 40 - 32 + 2
    ids = consumer.table.read(["event_id"]).column("event_id").to_pylist()
    assert sorted(ids) == sorted(s.event_id for s in sent)


def test_the_merge_leaves_the_files_of_full_flushes_as_written(
    consumer: ArchiveConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two full flushes of signals as producers send them (the archive's default of
    # 50,000 rows a commit), with the merge due after two commits: each file stays as
    # written. Merging them in pairs cost a third of the consumer's CPU, and maintenance
    # rewrites them with the rest of their day later anyway.
    monkeypatch.setattr(consumer_module, "_SMALL_FILES", 2)
    noon = datetime(2026, 12, 1, 12, tzinfo=UTC)
    traffic = Traffic(seed=5, now=lambda: noon)
    validator = SignalValidator(RegisteredEventType(d, 1) for d in default_definitions().values())
    flush = ArchiveSettings(url="unused").flush_rows
    values: list[bytes] = []
    while len(values) < 2 * flush:
        for event in validator.validate_events(traffic.batch(500), now=noon).accepted:
            event.received_at = noon
            values.append(encode_signal(event))
    for first in (0, flush):
        consumer.handle(
            [Record(0, i, "", KIND_SIGNAL, values[i], 0) for i in range(first, first + flush)]
        )
    (day,) = consumer.table.days().values()
    assert len(day.files) == 2
    assert day.rows == 2 * flush
    # Each is above the size the merge looks for (small commits' files still are merged:
    # the test above).
    assert all(Path(f).stat().st_size > consumer_module._SMALL_FILE_BYTES for f in day.files)


def test_files_write_the_distinct_columns_plain_and_without_statistics(
    consumer: ArchiveConsumer,
) -> None:
    # An id per event: no dictionary (Parquet's writer would build one per column chunk
    # only to give it up) and no min/max; the subject hash keeps its dictionary (it
    # repeats per user) without min/max; the other columns as Parquet writes them. The
    # same for the consumer's commits and for the merge of their files.
    consumer.handle(records(history(300, days=1)))
    consumer.handle(records(history(300, days=1, seed=4)))
    (day,) = consumer.table.days()
    assert consumer.table.compact([day]) == 2
    ((_, data),) = consumer.table.days().items()
    written = [f.removeprefix("file://") for f in data.files]
    assert len(written) == 1
    for path in written:
        group = pq.ParquetFile(path).metadata.row_group(0)
        chunks = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
        assert not chunks["event_id"].has_dictionary_page
        assert not chunks["event_id"].is_stats_set
        assert chunks["payload"].has_dictionary_page
        assert chunks["subject"].has_dictionary_page
        assert not chunks["subject"].is_stats_set
        assert chunks["user_id"].has_dictionary_page
        assert chunks["user_id"].is_stats_set


def test_one_delta_commit_per_batch_with_positions(consumer: ArchiveConsumer) -> None:
    recs = records(history(300, days=3))
    before = consumer.table.version()
    consumer.handle(recs)
    assert consumer.table.version() == before + 1
    last = {}
    for r in recs:
        last[r.partition] = r.offset + 1
    recorded = consumer.table.transaction_versions([consumer.app_id(p) for p in last])
    assert recorded == {consumer.app_id(p): n for p, n in last.items()}


def test_replay_after_a_crash_between_delta_and_bus_commit_adds_nothing(
    consumer: ArchiveConsumer,
) -> None:
    recs = records(history(400, days=4))
    consumer.handle(recs[:250])  # committed to Delta; the bus commit never happened
    consumer.handle(recs)  # redelivered from the last bus commit: everything again
    consumer.handle(recs[100:])
    ids = consumer.table.read(["event_id"]).column("event_id").to_pylist()
    assert len(ids) == 400 == len(set(ids))
    assert consumer.skipped_replays == 250 + 300


def test_resent_event_within_one_batch_is_archived_once(consumer: ArchiveConsumer) -> None:
    s = signal(1, "view", "u1", "i1", START)
    consumer.handle(records([s, s, s]))
    assert consumer.table.read().num_rows == 1


def test_killed_runtime_resumes_without_duplicates(tmp_path: Path, archive_url: str) -> None:
    bus_url = f"sqlite:///{tmp_path / 'bus.db'}"
    bus = open_bus(bus_url)
    sent = history(900, days=3)
    bus.publish([Message(s.user_id, encode_signal(s)) for s in sent])

    def runtime() -> tuple[ConsumerRuntime, ArchiveConsumer]:
        c = ArchiveConsumer(
            ArchiveTable(archive_url), ErasureLedger(archive_url), SUBJECT, vacuum_interval_s=None
        )
        return ConsumerRuntime(open_bus(bus_url), "archive", c, batch_size=200), c

    first, c1 = runtime()
    polled = first._consumer.poll(200, 1.0)
    c1.handle(polled)  # the Delta commit happens, then the process "dies" before the bus commit
    first._consumer.close()
    second, c2 = runtime()
    second.run(install_signal_handlers=False, idle_exit=True)
    ids = ArchiveTable(archive_url).read(["event_id"]).column("event_id").to_pylist()
    assert sorted(ids) == sorted(s.event_id for s in sent)
    assert c2.skipped_replays == len(polled)
    bus.close()


def test_buffered_bus_gathers_polls_into_large_commits(tmp_path: Path, archive_url: str) -> None:
    bus_url = f"sqlite:///{tmp_path / 'bus.db'}"
    bus = open_bus(bus_url)
    sent = history(1000, days=2)
    for start in range(0, 1000, 50):  # many small publishes: small polls without buffering
        chunk = sent[start : start + 50]
        bus.publish([Message(s.user_id, encode_signal(s)) for s in chunk])
    c = ArchiveConsumer(
        ArchiveTable(archive_url), ErasureLedger(archive_url), SUBJECT, vacuum_interval_s=None
    )
    buffered = BufferedBus(open_bus(bus_url), max_records=600, max_wait_s=0.3)
    rt = ConsumerRuntime(buffered, "archive", c, batch_size=600, poll_timeout=0.2)
    rt.run(install_signal_handlers=False, idle_exit=True)
    assert c.written == 1000
    assert c.commits == 2  # 600 + 400, not twenty commits of 50
    bus.close()


def test_table_reopens_and_reads_by_day(consumer: ArchiveConsumer, archive_url: str) -> None:
    consumer.handle(records(history(200, days=4)))
    again = ArchiveTable(archive_url)
    one_day = START.isoformat()
    part = again.read(["event_id", "date"], days=[one_day])
    assert part.num_rows == consumer.table.days()[one_day].rows
    assert set(part.column("date").to_pylist()) == {one_day}
    assert again.read(["event_id"], days=[]).num_rows == 0
    assert isinstance(part, pa.Table)


def test_gathering_reads_a_trickling_bus_every_gather_interval(tmp_path: Path) -> None:
    # A record every 10 ms for about a second: the gathering poll reads the bus a few
    # times (each read at least gather_interval_s after the last), not once per record.
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}")
    buffered = BufferedBus(bus, max_records=10_000, max_wait_s=1.0, gather_interval_s=0.2)
    consumer = buffered.consumer("g")
    inner_reads: list[float] = []
    inner = consumer._inner  # type: ignore[attr-defined]
    poll = inner.poll

    def counted(max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        inner_reads.append(time.monotonic())
        return poll(max_records, timeout)

    inner.poll = counted
    stop = threading.Event()
    sent = history(300, days=1)

    def trickle() -> None:
        for s in sent:
            if stop.is_set():
                return
            bus.publish([Message(s.user_id, encode_signal(s))])
            time.sleep(0.01)

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        got = consumer.poll(10_000, 2.0)
    finally:
        stop.set()
        thread.join()
    assert len(got) >= 50
    gaps = [b - a for a, b in itertools.pairwise(inner_reads)]
    assert 3 <= len(inner_reads) <= 8
    # The last pause may be cut short by the poll's deadline; the others are whole.
    assert min(gaps[:-1]) >= 0.19
    consumer.close()
    bus.close()


def test_an_owner_that_lost_the_partition_cannot_commit(tmp_path: Path) -> None:
    # Two archive consumers on one table, as in a rebalance: the old owner read the
    # recorded positions, the new one committed meanwhile. The old commit is refused
    # whole (Delta's check on the partition's transaction id), so nothing is archived twice.
    root = str(tmp_path / "archive")
    old = ArchiveConsumer(ArchiveTable(root), ErasureLedger(root), SUBJECT)
    new = ArchiveConsumer(ArchiveTable(root), ErasureLedger(root), SUBJECT)
    batch = records(history(40, days=1))
    snapshot = old.table.table()
    old.table.transaction_versions([old.app_id(p) for p in {r.partition for r in batch}], snapshot)
    new.handle(batch)
    stale = old.table
    with pytest.raises(FencedError):
        stale.append(
            signals_to_arrow(history(3, days=1), SUBJECT),
            transactions={old.app_id(batch[0].partition): 999},
            snapshot=snapshot,
        )
    assert new.table.read().num_rows == 40
    # Read again on a fresh snapshot, the old owner finds the batch already archived.
    old.handle(batch)
    assert new.table.read().num_rows == 40
    assert old.skipped_replays == 40

"""SQLite bus throughput: publish in batches of 500 and consume, on one core.

Baselines measured in the same run: a naive log (one SQLite row per event, same
fsync policy) for publish, and msgspec decoding the same records from memory (no
storage at all) for consume. One batch in 100 also carries an erasure event; a member
of the erasure kind (as the erasure-only participants read the bus) then reads past the
whole log, against the member of every kind in the same run.

    .venv/bin/python bench/bench_bus_sqlite.py [--events 300000]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, pin_one_core
from headwater.bus import Message, Record, committed_positions, open_bus
from headwater.contract.definition import RegisteredEventType
from headwater.contract.loader import default_definitions
from headwater.contract.signal import encode_signal
from headwater.contract.validator import SignalValidator
from headwater.demo.traffic import Traffic


def realistic_messages(n: int) -> list[Message]:
    validator = SignalValidator(RegisteredEventType(d, 1) for d in default_definitions().values())
    traffic = Traffic(users=100_000, items=50_000)
    out: list[Message] = []
    while len(out) < n:
        result = validator.validate_events(traffic.batch(500))
        out.extend(Message(e.user_id, encode_signal(e)) for e in result.accepted)
    return out[:n]


def naive_log(path: Path, batches: list[list[Message]]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY, key TEXT, kind TEXT, value BLOB)")
    start = time.perf_counter()
    for batch in batches:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO log (key, kind, value) VALUES (?, ?, ?)",
            [(m.key, m.kind, m.value) for m in batch],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return sum(len(b) for b in batches) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    pin_one_core()
    msgs = realistic_messages(args.events)
    batches = [msgs[i : i + 500] for i in range(0, len(msgs), 500)]
    for i in range(0, len(batches), 100):
        batches[i] = [*batches[i], Message(batches[i][0].key, b"{}", kind="erasure")]
    total = sum(len(b) for b in batches)
    with tempfile.TemporaryDirectory() as tmp:
        bus = open_bus(f"sqlite:///{tmp}/bus.db", partitions=args.partitions)
        start = time.perf_counter()
        for batch in batches:
            bus.publish(batch)
        publish_eps = len(msgs) / (time.perf_counter() - start)

        consumer = bus.consumer("bench")
        got = 0
        start = time.perf_counter()
        while got < total:
            records = consumer.poll(5000, 0.5)
            if not records:
                break
            consumer.commit(committed_positions(records))
            got += len(records)
        consume_eps = got / (time.perf_counter() - start)
        consumer.close()

        member = bus.kind_consumer("bench-erasures", ["erasure"])
        positions: dict[int, int] = {}
        erasures = 0
        start = time.perf_counter()
        while sum(positions.values()) < total:
            erasures += len(member.poll(5000, 0.5))
            covered = member.covered()
            if not covered:
                break
            member.commit(covered)
            positions.update(covered)
        kind_eps = sum(positions.values()) / (time.perf_counter() - start)
        member.close()
        bus.close()
        naive_eps = naive_log(Path(tmp) / "naive.db", batches)

    blobs = [
        msgspec.msgpack.encode([Record(0, i, m.key, m.kind, m.value, 0) for i, m in enumerate(b)])
        for b in batches
    ]
    decode = msgspec.msgpack.Decoder(list[Record]).decode
    start = time.perf_counter()
    decoded = sum(len(decode(b)) for b in blobs)
    memory_decode_eps = decoded / (time.perf_counter() - start)
    emit(
        "bus_sqlite",
        {
            "events": total,
            "value_bytes_avg": round(sum(len(m.value) for m in msgs) / len(msgs), 1),
            "partitions": args.partitions,
            "publish_eps": round(publish_eps),
            "publish_target_eps": 300_000,
            "naive_row_per_event_log_eps": round(naive_eps),
            "publish_vs_naive": round(publish_eps / naive_eps, 2),
            "consume_eps": round(consume_eps),
            "consume_target_eps": 1_000_000,
            "in_memory_decode_eps": round(memory_decode_eps),
            "consume_vs_in_memory_decode": round(consume_eps / memory_decode_eps, 2),
            "consumed": got,
            "kind_member_read_past_eps": round(kind_eps),
            "kind_member_vs_consume": round(kind_eps / consume_eps, 2),
            "kind_member_erasures": erasures,
        },
    )


if __name__ == "__main__":
    main()

"""Publish and consume throughput of the Kafka bus on librdkafka's in-process mock cluster.

    .venv/bin/python bench/bench_bus_kafka.py [--events 100000] [--brokers 3]
    .venv/bin/python bench/bench_bus_kafka.py --url kafka://broker:9092   # a real cluster

Publishes ``--events`` records of ~200-byte values in batches of 500 (each batch
returns once every record is acknowledged by all in-sync replicas), then reads
back what the cluster kept through one group member, committing after every poll.
Prints one JSON object.

The mock cluster keeps only a few MB per partition and silently drops older
record batches, so the consume phase reads what is left (``consumed`` says how
much). Its brokers run as threads of this process: client and "cluster" share the
machine's cores, which a real deployment does not.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import confluent_kafka

from _common import emit, peak_rss_mb
from headwater.bus import Message, committed_positions, open_bus
from headwater.bus.kafka import MockCluster

BATCH = 500
VALUE_BYTES = 200


def _client_version() -> str:
    # A (version, int) tuple in most releases, a plain string in some.
    version = confluent_kafka.version()
    return str(version[0] if isinstance(version, tuple) else version)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a real cluster (kafka://host:9092); default: mock")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--brokers", type=int, default=3)
    args = parser.parse_args()

    pad = b"x" * (VALUE_BYTES - 40)
    messages = [
        Message(f"user-{i % 10_000}", b'{"event_id":"%08d",' % i + pad) for i in range(args.events)
    ]
    with contextlib.ExitStack() as stack:
        if args.url:
            base = args.url.split("?", 1)[0]
        else:
            cluster = stack.enter_context(MockCluster(brokers=args.brokers, partitions=4))
            base = f"kafka://{cluster.bootstrap_servers}"
        bus = open_bus(f"{base}?topic=bench{uuid.uuid4().hex[:8]}&partitions=4")
        stack.callback(bus.close)

        batch_seconds = []
        start = time.perf_counter()
        for i in range(0, len(messages), BATCH):
            t = time.perf_counter()
            bus.publish(messages[i : i + BATCH])
            batch_seconds.append(time.perf_counter() - t)
        publish_s = time.perf_counter() - start

        lag = bus.lag("bench")
        kept = sum(p.lag_events for p in lag)
        consumer = bus.consumer("bench")
        joined = time.perf_counter()
        got = 0
        first = 0.0
        while got < kept and time.perf_counter() - joined < 120:
            records = consumer.poll(BATCH, 0.5)
            if records and not first:
                first = time.perf_counter()
            consumer.commit(committed_positions(records))
            got += len(records)
        done = time.perf_counter()
        consumer.close()

    batch_seconds.sort()
    emit(
        "bus_kafka",
        {
            "cluster": args.url or f"librdkafka mock, {args.brokers} brokers, in-process",
            "librdkafka": confluent_kafka.libversion()[0],
            "confluent_kafka": _client_version(),
            "events": len(messages),
            "value_bytes": VALUE_BYTES,
            "partitions": bus.partitions,
            "batch": BATCH,
            "publish_eps": round(len(messages) / publish_s),
            "publish_batch_ms_p50": round(batch_seconds[len(batch_seconds) // 2] * 1000, 2),
            "publish_batch_ms_p99": round(batch_seconds[int(len(batch_seconds) * 0.99)] * 1000, 2),
            "kept_by_cluster": kept,
            "consumed": got,
            "group_join_s": round(first - joined, 2) if first else None,
            "consume_eps": round(got / (done - first)) if first and done > first else None,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        },
    )


if __name__ == "__main__":
    main()

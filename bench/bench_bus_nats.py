"""Publish and consume throughput of the NATS JetStream bus against a local server.

    .venv/bin/python bench/bench_bus_nats.py [nats://127.0.0.1:4222] [--events 100000]

Publishes ``--events`` records of ~200-byte values in batches of 500 (each batch
returns once every record is acknowledged by JetStream), then reads them all back
through one group member, committing after every poll. Prints one JSON object.
The topic is private to the run and deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, peak_rss_mb
from headwater.bus import Message, committed_positions, open_bus
from headwater.bus.nats import delete_bus

BATCH = 500
VALUE_BYTES = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "server",
        nargs="?",
        default=os.environ.get("HEADWATER_TEST_NATS_URL", "nats://127.0.0.1:4222"),
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()

    topic = f"bench{uuid.uuid4().hex[:8]}"
    url = f"{args.server}?topic={topic}&partitions={args.partitions}"
    pad = b"x" * (VALUE_BYTES - 40)
    messages = [
        Message(f"user-{i % 10_000}", b'{"event_id":"%08d",' % i + pad) for i in range(args.events)
    ]
    bus = open_bus(url)
    try:
        batch_seconds = []
        start = time.perf_counter()
        for i in range(0, len(messages), BATCH):
            t0 = time.perf_counter()
            bus.publish(messages[i : i + BATCH])
            batch_seconds.append(time.perf_counter() - t0)
        publish_s = time.perf_counter() - start

        consumer = bus.consumer("bench")
        got = 0
        polls = 0
        start = time.perf_counter()
        while got < len(messages):
            records = consumer.poll(BATCH, 5.0)
            if not records:
                break
            consumer.commit(committed_positions(records))
            got += len(records)
            polls += 1
        consume_s = time.perf_counter() - start
        consumer.close()
        lag = sum(p.lag_events for p in bus.lag("bench"))
    finally:
        bus.close()
        delete_bus(url)

    batch_seconds.sort()
    emit(
        "bus_nats",
        {
            "server": args.server,
            # Not pinned to one core: the server runs beside the client on the same machine.
            "client_pinned": False,
            "events": len(messages),
            "value_bytes": VALUE_BYTES,
            "partitions": args.partitions,
            "publish": {
                "batch": BATCH,
                "seconds": round(publish_s, 3),
                "events_per_s": round(len(messages) / publish_s),
                "batch_p50_ms": round(batch_seconds[len(batch_seconds) // 2] * 1000, 2),
                "batch_p99_ms": round(batch_seconds[int(len(batch_seconds) * 0.99)] * 1000, 2),
            },
            "consume": {
                "records": got,
                "polls": polls,
                "seconds": round(consume_s, 3),
                "events_per_s": round(got / consume_s) if consume_s else None,
                "lag_after": lag,
            },
            "peak_rss_mb": round(peak_rss_mb(), 1),
        },
    )


if __name__ == "__main__":
    main()

"""The producer SDK's own CPU per publish of 500 events, without the network.

Each round queues 400 batches of 499 realistic events and one probe (the end-to-end
bench's workload, without event ids), and for each: ``_enqueue`` (ids, the encode that
refuses an event that cannot be sent, the queue), ``_next_batch`` (the body) and
``_settle`` with the gateway's 200 answer (500 results, none rejected). What httpx costs
around it is left out: that is not the SDK's code. Baseline, same run: a plain loop that
gives each event its id in a copy and encodes the batch with msgspec, the least any
client does. The best of ``--repeat`` rounds of each is reported.

    .venv/bin/python bench/bench_sdk.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit
from bench_freshness import BATCH, batches_of
from headwater.client._core import ClientCore
from headwater.ingest.ingestor import EventResult, IngestOutcome
from headwater.wire import new_event_ids

BATCHES = 400


def answer(n: int) -> bytes:
    """The gateway's 200 answer to a batch of ``n`` accepted events."""
    results = [
        EventResult(index=i, status="accepted", event_id=f"01JEBENCH{i:017d}") for i in range(n)
    ]
    outcome = IngestOutcome(
        accepted=n,
        duplicates=0,
        rejected=0,
        producer="bench",
        received_at="2026-12-05T16:00:00.000000Z",
        results=results,
    )
    return msgspec.json.encode(outcome)


def sdk_round(batches: list[list[dict[str, Any]]], body: bytes) -> float:
    """CPU seconds per publish through the SDK's queue, body and answer."""
    client = ClientCore(
        batch_size=BATCH,
        max_batch_bytes=1 << 20,
        retry=None,
        on_rejection=None,
        on_overflow=None,
        on_error=None,
        max_queue_events=100_000,
        flush_interval=3600.0,
        close_timeout=1.0,
        spool=None,
    )
    start = time.process_time()
    for events in batches:
        client._enqueue(events)
        taken = client._next_batch()
        assert taken is not None
        batch, _body = taken
        client._settle(batch, (200, body, None, ""))
    elapsed = time.process_time() - start
    if client.totals.accepted != len(batches) * BATCH:
        raise RuntimeError(f"accepted {client.totals.accepted}")
    return elapsed / len(batches)


def plain_round(batches: list[list[dict[str, Any]]]) -> float:
    """CPU seconds per batch: an id in a copy of each event, the batch encoded."""
    encode = msgspec.json.encode
    start = time.process_time()
    for events in batches:
        ids = new_event_ids(len(events))
        encode([{**e, "event_id": i} for e, i in zip(events, ids, strict=True)])
    return (time.process_time() - start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    batches = [events for _probe, events in batches_of(BATCHES, "bench", seed=1)]
    gc.freeze()  # the workload is held to the end: not the SDK's garbage
    body = answer(BATCH)
    sdk, plain = [], []
    for _ in range(args.repeat):
        plain.append(plain_round(batches))
        sdk.append(sdk_round(batches, body))
    best_sdk, best_plain = min(sdk), min(plain)
    emit(
        "sdk",
        {
            "events_per_publish": BATCH,
            "publishes": BATCHES,
            "sdk_cpu_us_per_publish": round(best_sdk * 1e6),
            "sdk_cpu_us_per_publish_runs": [round(s * 1e6) for s in sdk],
            "plain_cpu_us_per_batch": round(best_plain * 1e6),
            "sdk_vs_plain": round(best_sdk / best_plain, 2),
        },
    )


if __name__ == "__main__":
    main()

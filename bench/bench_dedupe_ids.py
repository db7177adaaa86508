"""The embedded idempotency window's claim cost by the shape of the event ids.

The window (``SqliteIdempotencyWindow``) keys its entries by event id in a B-tree. Ids
that grow with time (the SDK's ULIDs, or a producer's counter) land next to each other:
a claim of 500 new ids dirties a few pages. Random ids (UUIDv4, as many other SDKs send)
land all over the tree: a claim dirties about one page per id, and each commit writes
those pages to the write-ahead log. For each window size, the window is filled with ids
of one shape, then batches of 500 new ids of that shape are claimed (one claim a batch,
as the gateway does), timed; the random-id figure is reported as a ratio to the
time-ordered one measured in the same run.

    .venv/bin/python bench/bench_dedupe_ids.py [--entries 100000,1000000] [--batches 200]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, pin_one_core
from headwater.dedupe.sqlite import SqliteIdempotencyWindow
from headwater.wire import new_event_id

BATCH = 500


def ordered_id() -> str:
    return new_event_id("web-")


def random_id() -> str:
    return f"web-{uuid.uuid4()}"


def claim_us_per_batch(entries: int, batches: int, make_id: object) -> tuple[float, float]:
    """Microseconds per claim of 500 new ids, into a window of ``entries``; and its MB."""
    assert callable(make_id)
    rng = random.Random(7)

    def batch() -> list[tuple[str, str]]:
        return [(make_id(), f"u{rng.randrange(100_000):07d}") for _ in range(BATCH)]

    with tempfile.TemporaryDirectory() as tmp:
        window = SqliteIdempotencyWindow(f"sqlite:///{tmp}/dedupe.db", window_s=86_400)
        for _ in range(entries // BATCH):
            window.remember(batch())
        claims = [batch() for _ in range(batches)]
        start = time.perf_counter()
        for n, entries_ in enumerate(claims):
            window.claim(entries_, f"bench-{n}")
        spent = time.perf_counter() - start
        size = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20
        window.close()
    return spent / batches * 1e6, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", default="100000,1000000")
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    pin_one_core()
    figures: dict[str, object] = {}
    for entries in (int(e) for e in args.entries.split(",")):
        ordered, ordered_mb = claim_us_per_batch(entries, args.batches, ordered_id)
        scattered, scattered_mb = claim_us_per_batch(entries, args.batches, random_id)
        figures[str(entries)] = {
            "time_ordered_us_per_claim": round(ordered),
            "random_us_per_claim": round(scattered),
            "random_vs_time_ordered": round(scattered / ordered, 1),
            "window_mb": {"time_ordered": round(ordered_mb, 1), "random": round(scattered_mb, 1)},
        }
    emit("dedupe_ids", {"batch_events": BATCH, "claims": args.batches, "by_entries": figures})


if __name__ == "__main__":
    main()

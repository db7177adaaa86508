"""The SQLite bus's publish latency once its retention drops records, on one core.

A gateway's bus publishes batches of 500 for as long as it runs; once the oldest records
are older than the retention, the publishes also drop them. This paces publishes of 500
realistic signals at ``--rate`` batches/s for ``--seconds`` into a bus whose retention
is ``--retention-s`` (short, so that it drops records within the run), and reports each
publish's wall time: before the first drop, and while records are being dropped. The
baseline, same run: the same publishes into a bus that never drops anything (a retention
longer than the run).

    .venv/bin/python bench/bench_bus_retention.py [--rate 150] [--seconds 75] [--retention-s 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, pin_one_core
from _workload import summary_ms
from bench_bus_sqlite import realistic_messages
from headwater.bus import Message, open_bus


def paced(
    url: str, batches: list[list[Message]], rate: float, seconds: float
) -> tuple[list[tuple[float, float]], int]:
    """Each publish's (start in seconds from the first, wall ms); the file's bytes at
    the end."""
    bus = open_bus(url)
    out = []
    try:
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t0 = time.perf_counter()
            bus.publish(batches[i % len(batches)])
            out.append((t0 - start, (time.perf_counter() - t0) * 1000))
    finally:
        bus.close()
    path = Path(url.removeprefix("sqlite:///").split("?")[0])
    return out, path.stat().st_size


def summary(series: list[tuple[float, float]]) -> dict[str, float]:
    """The publishes' count and their p50, p99 and max in ms."""
    ms = [m for _, m in series]
    return {"publishes": len(ms), **summary_ms(ms, 2)} if ms else {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=150.0, help="publishes of 500 a second")
    parser.add_argument("--seconds", type=float, default=75.0)
    parser.add_argument("--retention-s", type=float, default=10.0)
    args = parser.parse_args()
    pin_one_core()
    messages = realistic_messages(50_000)
    batches = [messages[i : i + 500] for i in range(0, len(messages), 500)]
    with tempfile.TemporaryDirectory() as tmp:
        kept, kept_bytes = paced(
            f"sqlite:///{tmp}/kept.db?partitions=8&retention={args.seconds * 10:.0f}s",
            batches,
            args.rate,
            args.seconds,
        )
        dropped, dropped_bytes = paced(
            f"sqlite:///{tmp}/dropped.db?partitions=8&retention={args.retention_s:g}s",
            batches,
            args.rate,
            args.seconds,
        )
    # Records are dropped once the first ones are older than the retention.
    after = [(t, m) for t, m in dropped if t >= args.retention_s]
    emit(
        "bus_retention",
        {
            "rate_batches_per_s": args.rate,
            "events_per_s": args.rate * 500,
            "seconds": args.seconds,
            "retention_s": args.retention_s,
            "baseline_nothing_dropped": summary(kept),
            "baseline_file_mb": round(kept_bytes / 2**20, 1),
            "dropping": summary(after),
            "before_the_first_drop": summary([(t, m) for t, m in dropped if t < args.retention_s]),
            "dropping_file_mb": round(dropped_bytes / 2**20, 1),
            "slowest_publishes_while_dropping": [
                f"{m:.1f} ms at {t:.2f} s" for t, m in sorted(after, key=lambda p: -p[1])[:6]
            ],
        },
    )


if __name__ == "__main__":
    main()

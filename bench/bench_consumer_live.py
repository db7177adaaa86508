"""The feature consumer on a live stream against the same consumer catching up a backlog.

Signals as the gateway puts them on the bus (``_workload.signal_messages``: Zipf
users, validated and encoded ahead) are published to the embedded SQLite bus at
``--rate`` for ``--seconds`` by this process (one core) while ``headwater consume
features`` runs as its own process on the other core: the consumer's CPU per signal
over the middle of the run (from ``/proc/<pid>/stat``) and its cores. Baseline, same
run: a fresh home with the same signals published first, then the consumer catching
them up with ``--batch-size`` of what its linger gathers at that rate (50 ms), to the
end (``--until-idle``; its CPU from ``getrusage``). A backlog's batches come a
partition at a time (a poll reads one partition's backlog before the next), so they
name fewer users than a live stream's batch of the same size, which holds every
partition's last 50 ms.

    .venv/bin/python bench/bench_consumer_live.py [--rate 80000] [--seconds 25]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from _workload import cpu_seconds, pin, server_env, signal_messages
from headwater.bus import open_bus
from headwater.bus.base import Bus
from headwater.config import Settings
from headwater.features.consumer import LINGER_S

WARMUP_S = 5.0


def _bus(tmp: str, name: str) -> tuple[Path, Bus]:
    """A fresh embedded home and its bus."""
    home = Path(tmp) / name
    home.mkdir()
    return home, open_bus(Settings.from_env(home).bus_url)


def _consumer(home: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**server_env(home), "HEADWATER_LOG_LEVEL": "WARNING"}
    argv = [sys.executable, "-m", "headwater.cli", "consume", "features", *extra]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(proc.pid, {1})
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=80_000)
    parser.add_argument("--seconds", type=float, default=25.0)
    args = parser.parse_args()
    pin(0)
    with tempfile.TemporaryDirectory(prefix="hw-bench-live-") as tmp:
        home, bus = _bus(tmp, "live")
        messages = signal_messages(int(args.rate * (args.seconds + 1)) // 500 * 500)
        batches = [messages[i : i + 500] for i in range(0, len(messages), 500)]
        consumer = _consumer(home)
        time.sleep(3.0)  # imported, joined, idle
        start = time.perf_counter()
        marks: list[tuple[float, float, int]] = []
        late = 0.0
        for i, messages in enumerate(batches):
            due = start + i * 500 / args.rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            late = max(late, -wait)
            bus.publish(messages)
            elapsed = time.perf_counter() - start
            if (not marks and elapsed >= WARMUP_S) or (len(marks) == 1 and elapsed >= args.seconds):
                marks.append((time.perf_counter(), cpu_seconds(consumer.pid), i))
            if len(marks) == 2:
                break
        consumer.terminate()
        consumer.wait()
        bus.close()
        (t0, c0, i0), (t1, c1, i1) = marks
        live_us = (c1 - c0) / ((i1 - i0) * 500) * 1e6

        backlog_home, backlog = _bus(tmp, "backlog")
        for messages in batches:
            backlog.publish(messages)
        backlog.close()
        events = len(batches) * 500
        batch_size = int(args.rate * LINGER_S)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        _consumer(backlog_home, "--until-idle", "--batch-size", str(batch_size)).wait()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        backlog_us = spent / events * 1e6
    emit(
        "consumer_live",
        {
            "rate_eps": args.rate,
            "seconds": args.seconds,
            "publisher_most_late_s": round(late, 3),
            "live_cpu_us_per_event": round(live_us, 2),
            "live_cores": round((c1 - c0) / (t1 - t0), 3),
            "backlog_batch_size": batch_size,
            "backlog_events": events,
            "backlog_cpu_us_per_event": round(backlog_us, 2),
            "live_vs_backlog": round(live_us / backlog_us, 2),
        },
    )


if __name__ == "__main__":
    main()

"""How long a live stream's batch waits for its write to the SQLite online store, with the
write-ahead log checkpointed from the store's own thread (``headwater._checkpoint``).

Two stores of ``--users`` rows (250-390 bytes, as the default features' rows), written
batch by batch as the feature consumer writes them: the rows of the ``--rows`` users a
batch names (drawn Zipf) read, changed and written back with the batch's positions in
one transaction (``get`` then ``put``), then ``--compute-ms`` of CPU for the batch's
feature pass. The first store checkpoints from its thread (the default); the baseline,
in the same run, is the second with its thread never started, so that the commit that
takes the log past 40 MB checkpoints, as every release before did. The two alternate in
rounds of ``--round`` batches (each starting first every other round), and a reader
thread reads ten random rows of the store being written every 5 ms, as the gateway's
reads do. Reported for each: the ``put``'s wall time (p50, p99, max), the process's CPU
per batch (both threads), the largest write-ahead log seen, and the checkpoints.

    .venv/bin/python bench/bench_online_commits.py [--rows 1200] [--batches 400]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from _workload import pct
from headwater.online.base import Position
from headwater.online.sqlite import SqliteOnlineStore


class Run:
    """One store and what its batches measured."""

    def __init__(self, path: Path, users: int, *, own_checkpoints: bool) -> None:
        self.path = path
        self.store = SqliteOnlineStore(f"sqlite:///{path}")
        if own_checkpoints:
            self.store._checkpointer = None  # the writer's commits checkpoint, as before
        rnd = random.Random(1)
        rows = {_key(u): rnd.randbytes(rnd.randint(250, 390)) for u in range(users)}
        self.store.put("user", rows)
        self.put_ms: list[float] = []
        self.cpu_s = 0.0
        self.largest_log = 0
        self.offset = 0

    def batch(self, users: list[int], compute_s: float, rnd: random.Random) -> None:
        cpu = time.process_time()
        keys = [_key(u) for u in users]
        found = self.store.get("user", keys)
        rows = {k: _changed(found.get(k, b""), rnd) for k in keys}
        self.offset += len(users)
        started = time.perf_counter()
        self.store.put(
            "user",
            rows,
            group="features",
            positions={0: Position(self.offset, int(time.time() * 1000))},
        )
        self.put_ms.append((time.perf_counter() - started) * 1000)
        busy_until = time.perf_counter() + compute_s
        while time.perf_counter() < busy_until:  # the feature pass: CPU, the GIL held
            pass
        self.cpu_s += time.process_time() - cpu
        wal = Path(f"{self.path}-wal")
        if wal.exists():
            self.largest_log = max(self.largest_log, wal.stat().st_size)

    def figures(self) -> dict[str, Any]:
        checkpointer = self.store._checkpointer
        return {
            "put_ms": {
                "p50": round(statistics.median(self.put_ms), 2),
                "p99": round(pct(self.put_ms, 0.99), 2),
                "max": round(max(self.put_ms), 2),
                "mean": round(statistics.fmean(self.put_ms), 2),
            },
            "cpu_ms_per_batch": round(1000 * self.cpu_s / len(self.put_ms), 2),
            "largest_log_mb": round(self.largest_log / 1e6, 1),
            "thread_checkpoints": None if checkpointer is None else checkpointer.checkpoints,
            "finished_by_the_thread": None if checkpointer is None else checkpointer.finished,
            "finished_by_the_writer": (
                None if checkpointer is None else checkpointer.finished_by_writer
            ),
        }


def _key(user: int) -> str:
    return f"user-{user:06d}"


def _changed(row: bytes, rnd: random.Random) -> bytes:
    size = max(250, min(390, len(row) + rnd.randint(-8, 8)))
    return rnd.randbytes(size)


def reader(runs: list[Run], active: list[int], stop: threading.Event, users: int) -> None:
    rnd = random.Random(7)
    while not stop.wait(0.005):
        runs[active[0]].store.get("user", [_key(rnd.randrange(users)) for _ in range(10)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=1_200, help="users a batch names")
    parser.add_argument("--batches", type=int, default=400, help="of each store")
    parser.add_argument("--round", type=int, default=20)
    parser.add_argument("--compute-ms", type=float, default=20.0)
    args = parser.parse_args()
    weights = [1 / (i + 1) ** 1.1 for i in range(args.users)]
    with tempfile.TemporaryDirectory() as tmp:
        runs = [
            Run(Path(tmp) / "thread.db", args.users, own_checkpoints=False),
            Run(Path(tmp) / "writer.db", args.users, own_checkpoints=True),
        ]
        active = [0]
        stop = threading.Event()
        reading = threading.Thread(target=reader, args=(runs, active, stop, args.users))
        reading.start()
        rnd = random.Random(3)
        rounds = args.batches // args.round
        for r in range(rounds):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for which in order:
                active[0] = which
                for _ in range(args.round):
                    users = list(set(rnd.choices(range(args.users), weights, k=args.rows * 3)))
                    runs[which].batch(users[: args.rows], args.compute_ms / 1000, rnd)
        stop.set()
        reading.join()
        thread, writer = (run.figures() for run in runs)
        for run in runs:
            run.store.close()
    emit(
        "online_commits",
        {
            "users": args.users,
            "rows_per_batch": args.rows,
            "batches_each": rounds * args.round,
            "compute_ms_per_batch": args.compute_ms,
            "cores": len(os.sched_getaffinity(0)),
            "checkpoints_on_the_stores_thread": thread,
            "baseline_checkpoints_in_the_writers_commit": writer,
            "put_p99_vs_baseline": round(thread["put_ms"]["p99"] / writer["put_ms"]["p99"], 3),
            "put_mean_vs_baseline": round(thread["put_ms"]["mean"] / writer["put_ms"]["mean"], 3),
            "cpu_vs_baseline": round(thread["cpu_ms_per_batch"] / writer["cpu_ms_per_batch"], 3),
        },
    )


if __name__ == "__main__":
    main()

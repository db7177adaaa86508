"""A feature consumer's batch on the SQLite online store: the users' rows read, then
written with the batch's positions in one transaction, on one core.

The rows a batch read are rewritten where they were read (``UPDATE ... WHERE rowid``,
``SqliteOnlineStore._write_rows``); the baseline, in the same run and on a copy of the
same store, writes the same rows by key (``INSERT ... ON CONFLICT DO UPDATE``, the path of
rows not read first). Users are drawn Zipf over ``--users``, as a live stream's batch
of ``--events`` names them; rows of 250-390 bytes that change size a little each time.
The two alternate batch by batch (each starting first every other round); the medians of
the CPU per row written are reported, the read beside them. Every few batches a write
runs the WAL checkpoint (40 MB), in both.

    .venv/bin/python bench/bench_online_writes.py [--events 10000] [--batches 16]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, pin_one_core
from headwater.online.base import Position
from headwater.online.sqlite import SqliteOnlineStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=16)
    args = parser.parse_args()
    pin_one_core()
    rnd = random.Random(2)
    weights = [1 / (i + 1) ** 1.1 for i in range(args.users)]
    first = {f"user-{i}": rnd.randbytes(rnd.randint(250, 390)) for i in range(args.users)}
    micros: dict[str, list[float]] = {"by_rowid": [], "by_key": [], "read": []}
    rows_per_batch: list[int] = []
    with tempfile.TemporaryDirectory(prefix="hw-bench-online-") as tmp:
        stores = {
            way: SqliteOnlineStore(f"sqlite:///{tmp}/{way}.db") for way in ("by_rowid", "by_key")
        }
        for store in stores.values():
            store.put("user", first)
        for n in range(args.batches):
            drawn = rnd.choices(range(args.users), weights, k=args.events)
            users = sorted({f"user-{i}" for i in drawn})
            rows_per_batch.append(len(users))
            grow = {u: rnd.randint(-4, 8) for u in users}
            seed = rnd.random()
            for way in ("by_rowid", "by_key") if n % 2 == 0 else ("by_key", "by_rowid"):
                store = stores[way]
                start = time.process_time()
                rows = store.get("user", users)
                if way == "by_rowid":
                    micros["read"].append((time.process_time() - start) / len(users) * 1e6)
                else:
                    store._read = ("", {})  # the rows written by key, as without the read
                values = random.Random(seed)
                out = {u: values.randbytes(max(50, len(rows[u]) + grow[u])) for u in users}
                start = time.process_time()
                store.put("user", out, group="bench", positions={0: Position(n, 0)})
                micros[way].append((time.process_time() - start) / len(users) * 1e6)
        for store in stores.values():
            store.close()
    median = {way: statistics.median(v) for way, v in micros.items()}
    emit(
        "online_writes",
        {
            "users": args.users,
            "events_per_batch": args.events,
            "rows_per_batch_median": statistics.median(rows_per_batch),
            "batches": args.batches,
            "write_us_per_row_by_rowid": round(median["by_rowid"], 2),
            "write_us_per_row_by_key": round(median["by_key"], 2),
            "by_rowid_vs_by_key": round(median["by_rowid"] / median["by_key"], 3),
            "read_us_per_row": round(median["read"], 2),
            "write_us_per_row_runs": {k: [round(x, 2) for x in v] for k, v in micros.items()},
        },
    )


if __name__ == "__main__":
    main()

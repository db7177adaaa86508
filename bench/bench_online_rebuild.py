"""What the SQLite online store's erasure scrub costs, with and without the rebuild.

An erasure that deleted a feature row rebuilds the store's file (``VACUUM``): an earlier
copy of the row left in a page's free space may have lost its key and kept the user's
items (``SqliteOnlineStore.scrub``). For each store size in ``--users`` a store is built
as a consumer leaves one: every user's row written, then ``--rounds`` rounds rewriting
40% of the rows with longer ones (pages split and rebuilt). Then, ``--repeat`` times:

- ``scrub_ms``: one user's row deleted, then the scrub without a rebuild (the write-ahead
  log checkpointed and truncated): what an erasure cost the store before;
- ``rebuild_ms``: one user's row deleted, then the scrub with the rebuild;
- ``copy_ms``: the baseline in the same run, the file copied and synced (what writing the
  store's bytes once costs on this disk).

Medians are reported, with ``rebuild / copy``.

    .venv/bin/python bench/bench_online_rebuild.py [--users 100000,1000000]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from headwater._sqlite import scrub
from headwater.features.versions import USER_NAMESPACE
from headwater.online.sqlite import SqliteOnlineStore

_encode = msgspec.msgpack.Encoder().encode
_WRITE = 20_000


def _row(rng: random.Random, user: str, n: int) -> bytes:
    """A feature row about as long as the default features make one after ``n`` events."""
    items = [f"item-{rng.randrange(200_000)}" for _ in range(min(20, n))]
    times = [1_780_000_000_000 + i for i in range(len(items))]
    return _encode(
        {
            "counts": {"view": n, "click": n // 3},
            "window_counts": {"m": list(range(n % 30))},
            "recently_viewed": [items, times],
            "last_purchase": [times[0], items[0], {"order_id": f"ord-{user}-{n}"}],
            "_ids": [f"web-{user}-{i}" for i in range(min(n, 8))],
            "_first": times[0],
        }
    )


def build(path: Path, users: int, rounds: int) -> None:
    rng = random.Random(1)
    store = SqliteOnlineStore(f"sqlite:///{path}")
    keys = [f"u{i:07d}" for i in range(users)]
    for n in range(rounds + 1):
        changed = keys if n == 0 else [k for k in keys if rng.random() < 0.4]
        for start in range(0, len(changed), _WRITE):
            part = changed[start : start + _WRITE]
            store.put(USER_NAMESPACE, {k: _row(rng, k, 3 * n + 1) for k in part})
    store.scrub()
    store.close()


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def _copy_synced(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def measure(path: Path, users: int, repeat: int) -> dict[str, Any]:
    store = SqliteOnlineStore(f"sqlite:///{path}")
    rng = random.Random(2)
    scrubs, rebuilds, copies = [], [], []
    copy = path.with_name("copy.db")
    for _ in range(repeat):
        store.delete(USER_NAMESPACE, [f"u{rng.randrange(users):07d}"])
        # What the scrub did before: the log checkpointed and truncated, no rebuild.
        scrubs.append(_timed(lambda: scrub(store._conn)))
        store.delete(USER_NAMESPACE, [f"u{rng.randrange(users):07d}"])
        rebuilds.append(_timed(store.scrub))
        copies.append(_timed(lambda: _copy_synced(path, copy)))
        copy.unlink()
    size = path.stat().st_size
    store.close()
    rebuild, base = statistics.median(rebuilds), statistics.median(copies)
    return {
        "users": users,
        "file_mb": round(size / 1e6, 1),
        "scrub_ms": round(statistics.median(scrubs), 1),
        "rebuild_ms": round(rebuild, 1),
        "copy_ms": round(base, 1),
        "rebuild_over_copy": round(rebuild / base, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="100000", help="store sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = []
    for users in (int(u) for u in args.users.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "online.db"
            build(path, users, args.rounds)
            results.append(measure(path, users, args.repeat))
    emit("online_rebuild", {"rounds": args.rounds, "repeat": args.repeat, "stores": results})


if __name__ == "__main__":
    main()

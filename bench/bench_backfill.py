"""Backfill of one feature over an archive of N signals (issue 19), on one core.

Untimed setup: N realistic signals (Zipf users and items, the shipped contracts) are
written to a Delta archive the way the archive consumer writes them (commits of 100,000
rows with their bus positions) and published to a SQLite bus. Version 2 of the feature
definitions adds one feature (``recently_viewed_50``: the last 50 distinct items viewed).

Timed, each in a child process of its own (its peak RSS is the child's ``VmHWM``):

- ``backfill``: ``Backfill.run`` as ``headwater features backfill`` runs it: one pinned
  snapshot of the archive read (the columns the feature needs), every user's rows sorted
  by time and folded by the compiled pass, the states staged in the SQLite online store;
- baseline, same run: the streaming consumer (``ConsumerRuntime`` + ``FeatureConsumer``)
  computing the same one feature over the same signals from the bus into the store.

    .venv/bin/python bench/bench_backfill.py [--events 1000000] [--large]  # --large: 10M
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, pin_one_core
from _workload import signal_messages
from headwater.application import Application
from headwater.archive.consumer import position_id
from headwater.archive.schema import signals_to_arrow
from headwater.config import Settings
from headwater.contract.signal import decode_signal
from headwater.features.consumer import FeatureConsumer
from headwater.features.engine import FeatureEngine
from headwater.features.spec import DEFAULT_FEATURES, FeatureSpec

FEATURE = FeatureSpec(
    name="recently_viewed_50", kind="recent_items", event_types=("view",), size=50
)
COMMIT_ROWS = 100_000


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def setup(home: Path, events: int) -> int:
    """Archive and bus of ``events`` signals; version 2 adds FEATURE. Returns users."""
    with Application(Settings.from_env(home)) as app:
        app.register_shipped_contracts()
        table = app.open_archive_table()
        bus = app.bus
        users: set[str] = set()
        done = 0
        positions: dict[int, int] = {}
        while done < events:
            n = min(COMMIT_ROWS, events - done)
            msgs = signal_messages(n, seed=done + 7)
            signals = [decode_signal(m.value) for m in msgs]
            users.update(s.user_id for s in signals)
            for m in msgs:
                p = bus.partition_of(m.key)
                positions[p] = positions.get(p, 0) + 1
            for first in range(0, len(msgs), 5_000):
                bus.publish(msgs[first : first + 5_000])
            table.append(
                signals_to_arrow(signals, app.hasher),
                transactions={position_id("archive", p): o for p, o in positions.items()},
            )
            done += n
        app.feature_versions.apply((*DEFAULT_FEATURES, FEATURE))
        return len(users)


def child_backfill(home: Path) -> dict[str, float]:
    pin_one_core()
    with Application(Settings.from_env(home)) as app:
        worker = app.new_backfill()
        start = time.perf_counter()
        run = worker.run()
        elapsed = time.perf_counter() - start
        assert run is not None
        events = int(str(run.progress["events"]))
        return {
            "seconds": round(elapsed, 2),
            "events_per_s": round(events / elapsed),
            "users": float(str(run.progress["users_done"])),
            "peak_rss_mb": round(vm_hwm_mb(), 1),
        }


def child_stream(home: Path, events: int) -> dict[str, float]:
    pin_one_core()
    with Application(Settings.from_env(home)) as app:
        engine = FeatureEngine((FEATURE,), lateness_ms=int(app.settings.feature_lateness_s * 1000))
        consumer = FeatureConsumer(app.open_online_store(), engine, group="bench-stream")
        runtime = app.runtime(consumer, "bench-stream", batch_size=50_000)
        start = time.perf_counter()
        while runtime.stats.records < events:
            runtime.step()
        elapsed = time.perf_counter() - start
        runtime.close()
        return {
            "seconds": round(elapsed, 2),
            "events_per_s": round(events / elapsed),
            "peak_rss_mb": round(vm_hwm_mb(), 1),
        }


def child(kind: str, home: Path, events: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--home", str(home), "--events", str(events)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--large", action="store_true", help="10 M signals")
    parser.add_argument("--child", choices=["backfill", "stream"])
    parser.add_argument("--home", type=Path)
    args = parser.parse_args()
    events = 10_000_000 if args.large else args.events
    if args.child:
        result = (
            child_backfill(args.home)
            if args.child == "backfill"
            else child_stream(args.home, events)
        )
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        home = Path(tmp) / "hw"
        started = time.perf_counter()
        users = setup(home, events)
        setup_s = time.perf_counter() - started
        backfill = child("backfill", home, events)
        stream = child("stream", home, events)
    emit(
        "backfill",
        {
            "events": events,
            "users": users,
            "feature": FEATURE.name,
            "setup_seconds": round(setup_s, 1),
            "backfill": backfill,
            "baseline_streaming_consumer": stream,
            "backfill_vs_stream": round(backfill["events_per_s"] / stream["events_per_s"], 2),
        },
    )


if __name__ == "__main__":
    main()

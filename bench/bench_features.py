"""Streaming feature consumer throughput (issue 6), on one core.

A workload of realistic signals (Zipf users and items, the shipped contracts, the
gateway's envelope) is published to a SQLite bus first, untimed. Then the production
consumer (``ConsumerRuntime`` + ``FeatureConsumer``, built by ``Application.runtime``
as the consumer registry builds it: dead letters, erasure ledger, tombstones)
reads it back from the bus, decodes it and applies every declared feature:

- into the SQLite online store, for each batch size tried (the best is reported);
- into Redis (``redis://127.0.0.1:6379/15``, a private key prefix, removed after);
- baseline, same run (the issue's): a hand-written plain-Python loop that decodes the
  same events with ``decode_signal`` and computes the default features per event in
  dicts, no bus, no store, no idempotency check (``handwritten_loop``). It runs just
  before each store run and the ratio is taken within that pair (the machine's speed
  drifts over minutes); the median of the pairs is reported. The same loop over events
  decoded before it is timed (``preparsed``) runs just before it too, and
  ``vs_preparsed_loop_paired`` gives each store against it (SQLite at the largest batch
  size, Redis at the best): the issue's baseline read strictly, features without decoding;
- second reference, same run: the same ``FeatureEngine`` the consumer uses, applied per
  user per batch to in-memory dicts, no bus and no store (what the store and the bus
  cost on top of the feature logic);
- the row pass in memory (``row_pass_ns_per_event``): stored rows decoded, applied and
  encoded per batch with ``apply_rows``, against a Python loop over the users (below).

Then the SQLite consumer runs once more per batch size in a child process over the same
bus, and its peak RSS is reported (``VmHWM`` of the child). The same catch-up runs as
one member and as two members of one group (``headwater up --processes`` on two cores),
each its own process on a core of its own, started together once each has opened its
connections: events/s until the group's lag is zero (``members_eps``), alternated
``--repeat`` times. Last, the ceiling the store
sets (``sqlite_row_write_ceiling_eps``): the finished rows written back with
``SqliteOnlineStore.put``, one transaction per batch of the best batch size, each
holding the rows of that batch's users, and nothing else; events/s if the consumer
cost nothing but its row writes. The workload covers every
declared user (one extra event for each user the Zipf draw left out), so the store ends
with one row per user.

    .venv/bin/python bench/bench_features.py [--events 1000000]
    .venv/bin/python bench/bench_features.py --batch-sizes 50000,75000 --repeat 1
    .venv/bin/python bench/bench_features.py --spread-days 7   # rows a week of events built
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, peak_rss_mb, pin_one_core
from _workload import signal_messages
from headwater.application import Application
from headwater.bus import open_bus
from headwater.bus.base import Record
from headwater.config import Settings
from headwater.contract.loader import default_definitions
from headwater.contract.signal import decode_signal
from headwater.control import open_control_database
from headwater.features.consumer import FeatureConsumer
from headwater.features.signals import decode_batch
from headwater.online import open_online_store
from headwater.registry.contracts import ContractRegistry

REDIS_URL = "redis://127.0.0.1:6379/15"


def settings_for(home: Path, bus_url: str, online_url: str) -> Settings:
    base = Settings.from_env(home)
    return Settings(
        home=home,
        control_url=base.control_url,
        bus_url=bus_url,
        online_url=online_url,
        archive_url=base.archive_url,
        dedupe_url=base.dedupe_url,
    )


def run_consumer(settings: Settings, group: str, batch_size: int, events: int) -> float:
    """The production consumer from the start of the bus to its end; events/s."""
    app = Application(settings)
    consumer = FeatureConsumer(app.open_online_store(), app.new_feature_engine(), group=group)
    runtime = app.runtime(consumer, group, batch_size=batch_size)
    try:
        start = time.perf_counter()
        while runtime.stats.records < events:
            runtime.step()
        elapsed = time.perf_counter() - start
    finally:
        runtime.close()
        app.close()
    if consumer.applied + consumer.engine.duplicates != events:
        raise RuntimeError(f"applied {consumer.applied} of {events}")
    return events / elapsed


def plain_loop(values: list[bytes], settings: Settings, batch_size: int) -> float:
    """Read and apply the same features to in-memory dicts as the consumer does (the
    batch's columns, a user's slice at a time): the no-store ceiling."""
    with Application(settings) as app:
        engine = app.new_feature_engine()
    records = [Record(0, i, "", "signal", v, 0) for i, v in enumerate(values)]
    states: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    for first in range(0, len(records), batch_size):
        gc.disable()  # as the consumer does during a batch
        try:
            batch = decode_batch(records[first : first + batch_size], {}, runs=False)
            starts = batch.starts
            for k, user in enumerate(batch.users):
                state = states.get(user)
                if state is None:
                    state = states[user] = {}
                engine.apply_batch(state, batch, starts[k], starts[k + 1])
        finally:
            gc.enable()
    return len(values) / (time.perf_counter() - start)


def rows_pass(values: list[bytes], settings: Settings, batch_size: int) -> dict[str, int]:
    """Stored rows in, stored rows out, in memory, per batch: ns per event of the
    consumer's row pass (each user's row decoded, its events applied, the row encoded)
    as one ``apply_rows`` call per batch, against a Python loop over the batch's users
    calling ``apply_batch`` for each (the consumer before ``apply_rows``); best of 3,
    alternated, over rows left by a first pass."""
    with Application(settings) as app:
        engine = app.new_feature_engine()
    records = [Record(0, i, "", "signal", v, 0) for i, v in enumerate(values)]

    def read() -> list[Any]:
        return [
            decode_batch(records[first : first + batch_size], {}, runs=False)
            for first in range(0, len(records), batch_size)
        ]

    # Two reads of the same batches: the Python loop makes the columns of its own, and
    # the row pass in C reads the other as the reader left it (as the consumer's does).
    batches, as_read = read(), read()
    rows: dict[str, bytes] = {}
    for batch in as_read:
        out: dict[str, bytes] = {}
        engine.apply_rows(batch, rows, out)
        rows.update(out)

    def per_user(batch: Any) -> None:
        out: dict[str, bytes] = {}
        starts = batch.starts
        for k, user in enumerate(batch.users):
            state = engine.decode(rows.get(user))
            engine.apply_batch(state, batch, starts[k], starts[k + 1])
            out[user] = engine.encode(state)

    def per_batch(batch: Any) -> None:
        engine.apply_rows(batch, rows, {})

    best = {"per_user_loop": float("inf"), "apply_rows": float("inf")}
    gc.disable()
    try:
        for _ in range(3):
            for name, fn, given in (
                ("per_user_loop", per_user, batches),
                ("apply_rows", per_batch, as_read),
            ):
                start = time.perf_counter()
                for batch in given:
                    fn(batch)
                best[name] = min(best[name], time.perf_counter() - start)
    finally:
        gc.enable()
    return {name: round(t / len(values) * 1e9) for name, t in best.items()}


def handwritten_loop(values: list[bytes], *, preparsed: bool = False) -> tuple[float, int]:
    """The issue's baseline: one plain loop, per event, the default features in dicts.

    Decodes each event with ``decode_signal`` (with ``preparsed``, untimed before the
    loop, 100,000 events at a time: the loop times the features alone) and keeps, per
    user: counts per type, minute and hour buckets per type, the last 20 distinct
    viewed, clicked and saved items (a save with ``action: remove`` removes), the last
    purchase, rating sum and count, the last event time and the last time per surface.
    No idempotency check, no lateness bound, no row encoding: the cheapest form of the
    same features.
    Returns events/s and the number of users.
    """
    users: dict[str, dict[str, Any]] = {}
    recent_types = {"view": "recently_viewed", "click": "recently_clicked", "save": "saved"}
    chunk = 100_000 if preparsed else len(values)
    elapsed = 0.0
    for first in range(0, len(values), chunk):
        part = values[first : first + chunk]
        signals = [decode_signal(v) for v in part] if preparsed else None
        gc.disable()
        try:
            start = time.perf_counter()
            _features_loop(users, recent_types, signals or map(decode_signal, part))
            elapsed += time.perf_counter() - start
        finally:
            gc.enable()
        del signals
    return len(values) / elapsed, len(users)


def _features_loop(
    users: dict[str, dict[str, Any]], recent_types: dict[str, str], signals: Iterable[Any]
) -> None:
    for sig in signals:
        row = users.get(sig.user_id)
        if row is None:
            row = users[sig.user_id] = {"counts": {}, "minutes": {}, "hours": {}, "surf": {}}
        etype = sig.event_type
        ts = int(sig.timestamp.timestamp() * 1000)
        counts = row["counts"]
        counts[etype] = counts.get(etype, 0) + 1
        minute = (etype, ts // 60_000)
        minutes = row["minutes"]
        minutes[minute] = minutes.get(minute, 0) + 1
        hour = (etype, ts // 3_600_000)
        hours = row["hours"]
        hours[hour] = hours.get(hour, 0) + 1
        row["surf"][sig.surface] = ts
        if ts > row.get("last", 0):
            row["last"] = ts
        feature = recent_types.get(etype)
        if feature is not None and sig.item_id is not None:
            items: list[str] = row.setdefault(feature, [])
            if sig.item_id in items:
                items.remove(sig.item_id)
            if etype != "save" or sig.payload.get("action") != "remove":
                items.insert(0, sig.item_id)
                del items[20:]
        elif etype == "purchase":
            row["last_purchase"] = (ts, sig.item_id, sig.payload)
        elif etype == "rating":
            total, n = row.get("rating", (0, 0))
            row["rating"] = (total + sig.payload.get("rating", 0), n + 1)


def decode_only(values: list[bytes]) -> float:
    start = time.perf_counter()
    for value in values:
        decode_signal(value)
    return len(values) / (time.perf_counter() - start)


def row_write_ceiling(url: str, users: list[str], batch_size: int) -> float:
    """Events/s if a consumer did nothing but write each batch's rows (see module doc)."""
    store = open_online_store(url)
    try:
        rows = store.get("user", list(dict.fromkeys(users)))
        spent = 0.0
        for first in range(0, len(users), batch_size):
            batch = {u: rows[u] for u in dict.fromkeys(users[first : first + batch_size])}
            start = time.perf_counter()
            store.put("user", batch)
            spent += time.perf_counter() - start
    finally:
        store.close()
    return len(users) / spent


def clear_redis(prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            removed += int(client.delete(*batch))
            batch = []
    if batch:
        removed += int(client.delete(*batch))
    client.close()
    return removed


def high_water_mb() -> float:
    """Peak RSS of this process image (VmHWM).

    Not ``ru_maxrss``: Linux carries the parent's peak across fork and exec into it, and
    the parent holds the whole workload in memory.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return peak_rss_mb()


def child(args: argparse.Namespace) -> None:
    """The SQLite consumer alone in this process: its rate and peak RSS."""
    pin_one_core()
    settings = settings_for(Path(args.home), args.bus_url, args.online_url)
    eps = run_consumer(settings, f"features-rss-{args.batch_size}", args.batch_size, args.events)
    store = open_online_store(settings.online_url)
    rows = len(store.keys("user"))
    store.close()
    print(json.dumps({"eps": round(eps), "peak_rss_mb": round(high_water_mb(), 1), "rows": rows}))


def member(args: argparse.Namespace) -> None:
    """One member of a consumer group on its own core, from ``--start-at`` until stopped."""
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0) | set(range(os.cpu_count() or 1)))
        os.sched_setaffinity(0, {cores[args.core % len(cores)]})
    settings = settings_for(Path(args.home), args.bus_url, args.online_url)
    app = Application(settings)
    consumer = FeatureConsumer(app.open_online_store(), app.new_feature_engine(), group=args.group)
    runtime = app.runtime(consumer, args.group, batch_size=args.batch_size)
    time.sleep(max(0.0, args.start_at - time.time()))
    try:
        runtime.run(install_signal_handlers=True)
    finally:
        app.close()


def members_catch_up(home: Path, bus_url: str, online_url: str, members: int, size: int) -> float:
    """Events/s of ``members`` processes of one group catching up the whole bus."""
    group = f"members-{uuid.uuid4().hex[:6]}"
    bus = open_bus(bus_url)
    total = sum(p.lag_events for p in bus.lag(group))
    start_at = time.time() + 4.0  # every member has imported and connected by then
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--member",
                "--home",
                str(home),
                "--bus-url",
                bus_url,
                "--online-url",
                online_url,
                "--batch-size",
                str(size),
                "--group",
                group,
                "--start-at",
                repr(start_at),
                "--core",
                str(n),
            ]
        )
        for n in range(members)
    ]
    try:
        while sum(p.lag_events for p in bus.lag(group)) > 0:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a member exited before the group caught up")
            time.sleep(0.02)
        elapsed = time.time() - start_at
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
        bus.close()
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--batch-sizes", default="5000,20000,50000,75000")
    parser.add_argument("--repeat", type=int, default=2, help="rounds; the best is reported")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument(
        "--spread-days",
        type=float,
        default=0.0,
        help="event times spread over this many days (rows as a platform running that long)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--bus-url", help=argparse.SUPPRESS)
    parser.add_argument("--online-url", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--member", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--members-only", action="store_true", help="only the members phase")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.member:
        member(args)
        return
    pin_one_core()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    msgs = signal_messages(
        args.events,
        users=args.users,
        items=args.items,
        cover=True,
        spread_s=args.spread_days * 86_400,
    )
    values = [m.value for m in msgs]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "hw"
        bus_url = f"sqlite:///{tmp}/bus.db"
        base = settings_for(home, bus_url, f"sqlite:///{tmp}/unused.db")
        control = open_control_database(base.control_url)
        ContractRegistry(control).apply(default_definitions())
        control.close()
        bus = open_bus(bus_url)
        for first in range(0, len(msgs), 5000):
            bus.publish(msgs[first : first + 5000])
        bus.close()
        keys = [m.key for m in msgs]
        users = len(set(keys))
        del msgs

        # One member against two: alternated, each on fresh rows.
        members_eps: dict[int, list[float]] = {1: [], 2: []}
        for round_ in range(args.repeat):
            for count in (1, 2):
                url = f"sqlite:///{tmp}/online-m{count}-{round_}.db"
                eps = members_catch_up(home, bus_url, url, count, max(sizes))
                members_eps[count].append(eps)
                Path(url.removeprefix("sqlite:///")).unlink()
        members_figures = {
            "members_batch_size": max(sizes),
            "members_eps": {str(k): [round(e) for e in v] for k, v in members_eps.items()},
            "two_members_vs_one": [
                round(two / one, 3) for one, two in zip(members_eps[1], members_eps[2], strict=True)
            ],
        }
        if args.members_only:
            emit("features", {"events": len(values), **members_figures})
            return

        # The machine's speed drifts over minutes: every store run is paired with a
        # hand-written loop run just before it, and each ratio taken within its pair.
        sqlite_eps: dict[int, float] = {}
        plain_eps: dict[int, float] = {}
        ratios: dict[int, list[float]] = {s: [] for s in sizes}
        handwritten_runs: list[float] = []
        redis_eps = 0.0
        redis_ratios: list[float] = []
        # The stricter reading of the baseline: the loop over events decoded
        # before it is timed, also run just before each store run.
        preparsed_runs: list[float] = []
        preparsed_ratios: dict[str, list[float]] = {"sqlite": [], "redis": []}
        run = 0
        for _round in range(args.repeat):
            for size in sizes:
                run += 1
                url = f"sqlite:///{tmp}/online-{run}.db"
                preparsed_runs.append(handwritten_loop(values, preparsed=True)[0])
                handwritten_runs.append(handwritten_loop(values)[0])
                eps = run_consumer(settings_for(home, bus_url, url), f"f{run}", size, len(values))
                ratios[size].append(eps / handwritten_runs[-1])
                if size == max(sizes):
                    preparsed_ratios["sqlite"].append(eps / preparsed_runs[-1])
                sqlite_eps[size] = max(sqlite_eps.get(size, 0.0), eps)
                Path(f"{tmp}/online-{run}.db").unlink()
                plain_eps[size] = max(plain_eps.get(size, 0.0), plain_loop(values, base, size))
        best = max(sizes, key=lambda s: sqlite_eps[s] / plain_eps[s])
        best_abs = max(sizes, key=lambda s: sqlite_eps[s])
        if not args.no_redis:
            for _round in range(args.repeat):
                prefix = f"hwbench-{uuid.uuid4().hex[:8]}"
                url = f"{REDIS_URL}?prefix={prefix}"
                preparsed_runs.append(handwritten_loop(values, preparsed=True)[0])
                handwritten_runs.append(handwritten_loop(values)[0])
                try:
                    eps = run_consumer(
                        settings_for(home, bus_url, url), prefix, best_abs, len(values)
                    )
                    redis_eps = max(redis_eps, eps)
                    redis_ratios.append(eps / handwritten_runs[-1])
                    preparsed_ratios["redis"].append(eps / preparsed_runs[-1])
                finally:
                    clear_redis(prefix)
        decode_eps = max(decode_only(values) for _ in range(2))
        row_pass_ns = rows_pass(values, base, max(sizes))

        rss: dict[int, dict[str, Any]] = {}
        for size in sizes:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    "--home",
                    str(home),
                    "--bus-url",
                    bus_url,
                    "--online-url",
                    f"sqlite:///{tmp}/online-rss-{size}.db",
                    "--batch-size",
                    str(size),
                    "--events",
                    str(len(values)),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            rss[size] = json.loads(out.stdout)
        online_mb = Path(f"{tmp}/online-rss-{sizes[0]}.db").stat().st_size / 2**20
        ceiling = max(
            row_write_ceiling(f"sqlite:///{tmp}/online-rss-{best_abs}.db", keys, best_abs)
            for _ in range(2)
        )

    plain_best = plain_eps[best_abs]
    emit(
        "features",
        {
            "events": len(values),
            "spread_days": args.spread_days,
            "users_in_workload": users,
            "users_declared": args.users,
            "items_declared": args.items,
            "batch_sizes_tried": {
                str(s): {
                    "sqlite_eps": round(sqlite_eps[s]),
                    "engine_in_memory_eps": round(plain_eps[s]),
                    "ratio_to_engine_in_memory": round(sqlite_eps[s] / plain_eps[s], 3),
                    "ratio_to_handwritten_paired": [round(r, 3) for r in ratios[s]],
                }
                for s in sizes
            },
            "batch_size": best_abs,
            "sqlite_eps": round(sqlite_eps[best_abs]),
            "sqlite_target_eps": 500_000,
            "redis_eps": round(redis_eps) if redis_eps else None,
            "redis_target_eps": 300_000,
            "handwritten_loop_eps_median": round(statistics.median(handwritten_runs)),
            "handwritten_loop_eps_runs": [round(e) for e in handwritten_runs],
            "sqlite_vs_handwritten_paired": [round(r, 3) for r in ratios[best_abs]],
            "sqlite_vs_handwritten": round(statistics.median(ratios[best_abs]), 3),
            "sqlite_vs_handwritten_target": 2.0,
            "redis_vs_handwritten_paired": [round(r, 3) for r in redis_ratios],
            "redis_vs_handwritten": round(statistics.median(redis_ratios), 3)
            if redis_ratios
            else None,
            "redis_vs_handwritten_target": 1.5,
            "preparsed_loop_eps_runs": [round(e) for e in preparsed_runs],
            "vs_preparsed_loop_paired": {
                store: [round(r, 3) for r in rs] for store, rs in preparsed_ratios.items()
            },
            "engine_in_memory_eps": round(plain_best),
            "sqlite_vs_engine_in_memory": round(sqlite_eps[best_abs] / plain_best, 3),
            "best_ratio_batch_size": best,
            "decode_only_eps": round(decode_eps),
            "row_pass_ns_per_event": row_pass_ns,
            "consumer_child_eps": rss[best_abs]["eps"],
            "consumer_peak_rss_mb": rss[best_abs]["peak_rss_mb"],
            "consumer_peak_rss_mb_by_batch_size": {str(s): rss[s]["peak_rss_mb"] for s in sizes},
            "consumer_user_rows": rss[best_abs]["rows"],
            "online_db_mb": round(online_mb, 1),
            "rss_target_mb": 200,
            "sqlite_row_write_ceiling_eps": round(ceiling),
            "sqlite_vs_row_write_ceiling": round(sqlite_eps[best_abs] / ceiling, 3),
            **members_figures,
        },
    )


if __name__ == "__main__":
    main()

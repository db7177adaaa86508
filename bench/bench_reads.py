"""Feature read latency: in process, and over HTTP at a fixed request rate.

Setup (untimed): realistic signals (Zipf users and items) go through the production
feature consumer into the SQLite online store of a fresh data directory. Reads then
ask for users in proportion to their activity (busy users, with the largest rows,
are read most), as a recommender would.

- In process, one core: ``FeatureReader.read`` (row get, decode, every feature read,
  as_of, age, staleness). Baseline, same run: the raw ``store.get`` of the same row.
- HTTP: ``headwater serve`` on that directory, pinned to core 0; this process on core 1
  sends ``GET /v1/users/{id}/features`` open loop at ``--rate`` requests/s over
  keep-alive connections (a minimal client: its own cost stays far below the
  server's). Baseline, same run, same rate: ``GET /v1/health``, measured before and
  after the feature reads.
- ``--redis``: the same rows and positions copied into a single-node Redis
  (``--redis-url``) and into a private Redis Cluster (three masters, one replica each,
  started by this run with ``tests/_redis_cluster.py``); ``FeatureReader.read`` and
  the raw ``store.get`` timed on each, interleaved user by user, in the same run.

    .venv/bin/python bench/bench_reads.py [--events 300000] [--rate 1000] [--seconds 10]
    .venv/bin/python bench/bench_reads.py --redis [--no-http]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit
from _workload import (
    CLIENT_CORE,
    get_request,
    open_loop,
    pin,
    prepare_home,
    server_env,
    signal_messages,
    start_server,
    stop_server,
    summary_ms,
)
from headwater.application import Application
from headwater.bus import open_bus
from headwater.config import Settings


def populate(settings: Settings, events: int) -> list[str]:
    """Publish and consume ``events`` signals; the user of every event, in order."""
    msgs = signal_messages(events)
    bus = open_bus(settings.bus_url)
    for first in range(0, len(msgs), 5000):
        bus.publish(msgs[first : first + 5000])
    bus.close()
    app = Application(settings)
    runtime = app.consumer("features", batch_size=20_000)
    try:
        while runtime.stats.records < len(msgs):
            runtime.step()
        runtime.step()  # idle: positions get a fresh as_of
    finally:
        runtime.close()
        app.close()
    return [m.key for m in msgs]


def in_process(settings: Settings, users: list[str]) -> dict[str, Any]:
    app = Application(settings)
    store = app.online
    reader = app.features
    for user in users[:2000]:  # warm the page cache and the positions
        reader.read(user)
    read_ms: list[float] = []
    get_ms: list[float] = []
    found = 0
    clock = time.perf_counter_ns
    for user in users:
        t0 = clock()
        store.get("user", [user])
        t1 = clock()
        answer = reader.read(user)
        t2 = clock()
        get_ms.append((t1 - t0) / 1e6)
        read_ms.append((t2 - t1) / 1e6)
        found += answer.found
    app.close()
    return {
        "reads": len(users),
        "found": found,
        "read_ms": summary_ms(read_ms, 4),
        "raw_get_ms": summary_ms(get_ms, 4),
        "read_p99_vs_get_p99": round(summary_ms(read_ms)["p99"] / summary_ms(get_ms)["p99"], 2),
        "read_p99_target_ms": 0.1,
    }


def _copy_rows(settings: Settings, url: str) -> Settings:
    """The SQLite online store's user rows and positions, written to the store at ``url``;
    settings that read from it."""
    target = msgspec.structs.replace(settings, online_url=url)
    source_app, target_app = Application(settings), Application(target)
    try:
        source, store = source_app.online, target_app.online
        users = source.keys("user")
        positions = source.positions("features")
        for first in range(0, len(users), 2000):
            chunk = users[first : first + 2000]
            store.put("user", source.get("user", chunk))
        store.put("user", {}, group="features", positions=positions)
    finally:
        source_app.close()
        target_app.close()
    return target


def redis_reads(settings: Settings, users: list[str], redis_url: str) -> dict[str, Any]:
    """Reads of the same users from single-node Redis and from a Redis Cluster."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests._redis_cluster import local_cluster

    prefix = f"bench{random.getrandbits(32):08x}"
    with tempfile.TemporaryDirectory() as tmp, local_cluster(Path(tmp)) as cluster:
        stores = {
            "redis": _copy_rows(settings, f"{redis_url}?prefix={prefix}"),
            "redis_cluster": _copy_rows(settings, f"{cluster.url}/?prefix={prefix}"),
        }
        apps = {name: Application(s) for name, s in stores.items()}
        try:
            readers = {name: app.features for name, app in apps.items()}
            raw = {name: app.online for name, app in apps.items()}
            for name in stores:
                for user in users[:2000]:  # connections, positions cache
                    readers[name].read(user)
            read_ms: dict[str, list[float]] = {name: [] for name in stores}
            get_ms: dict[str, list[float]] = {name: [] for name in stores}
            clock = time.perf_counter_ns
            for user in users:
                for name in stores:  # interleaved: both see the same moment of the machine
                    t0 = clock()
                    raw[name].get("user", [user])
                    t1 = clock()
                    readers[name].read(user)
                    t2 = clock()
                    get_ms[name].append((t1 - t0) / 1e6)
                    read_ms[name].append((t2 - t1) / 1e6)
            out: dict[str, Any] = {
                name: {
                    "read_ms": summary_ms(read_ms[name], 4),
                    "raw_get_ms": summary_ms(get_ms[name], 4),
                }
                for name in stores
            }
        finally:
            for app in apps.values():
                app.close()
            cleanup = Application(stores["redis"])
            cleanup.online.clear("user")
            cleanup.close()
    single, multi = out["redis"], out["redis_cluster"]
    out["reads"] = len(users)
    out["cluster"] = "3 masters + 1 replica each, local redis-server 7.0, WAIT 1 on writes"
    out["cluster_vs_single_read_p99"] = round(multi["read_ms"]["p99"] / single["read_ms"]["p99"], 2)
    out["cluster_vs_single_get_p99"] = round(
        multi["raw_get_ms"]["p99"] / single["raw_get_ms"]["p99"], 2
    )
    return out


def over_http(
    home: Path, key: str, users: list[str], rate: float, seconds: float, port: int
) -> dict[str, Any]:
    n = int(rate * seconds)
    features = [get_request(f"/v1/users/{quote(u)}/features", key) for u in users[:n]]
    health = [get_request("/v1/health")] * n
    errors: list[int] = []

    def check(status: int, _body: bytes) -> None:
        if status != 200:
            errors.append(status)

    server = start_server(
        ["serve", "--home", str(home), "--port", str(port)], port, server_env(home)
    )
    try:
        warm = [get_request(f"/v1/users/{quote(u)}/features", key) for u in users[-500:]]
        asyncio.run(open_loop(port, warm, rate, check=check))
        h1, h1_late = asyncio.run(open_loop(port, health, rate, check=check))
        f, f_late = asyncio.run(open_loop(port, features, rate, check=check))
        h2, h2_late = asyncio.run(open_loop(port, health, rate, check=check))
    finally:
        stop_server(server)
    return {
        "rate_rps": rate,
        "requests_per_phase": n,
        "non_200": len(errors),
        "features_ms": summary_ms(f, 3),
        "health_before_ms": summary_ms(h1, 3),
        "health_after_ms": summary_ms(h2, 3),
        "features_p99_vs_health_p99": round(
            summary_ms(f)["p99"] / max(summary_ms(h1)["p99"], summary_ms(h2)["p99"]), 2
        ),
        "client_send_lateness_p99_ms": round(
            max(summary_ms(x)["p99"] for x in (f_late, h1_late, h2_late)), 3
        ),
        "features_p99_target_ms": 3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--reads", type=int, default=50_000, help="in-process reads")
    parser.add_argument("--rate", type=float, default=1000.0, help="HTTP requests/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="per HTTP phase")
    parser.add_argument("--port", type=int, default=8732)
    parser.add_argument("--redis", action="store_true", help="Redis vs Redis Cluster reads")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP phases")
    args = parser.parse_args()
    pin(CLIENT_CORE)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "hw"
        key = prepare_home(home)
        settings = Settings.from_env(home)
        activity = populate(settings, args.events)
        rng = random.Random(5)
        # Readers ask in proportion to activity: sample the users of random events.
        users = [rng.choice(activity) for _ in range(max(args.reads, int(args.rate * 12)))]
        figures: dict[str, Any] = {
            "events": args.events,
            "users_with_rows": len(set(activity)),
            "in_process": in_process(settings, users[: args.reads]),
        }
        if not args.no_http:
            figures["http"] = over_http(home, key, users, args.rate, args.seconds, args.port)
        if args.redis:
            figures["redis_in_process"] = redis_reads(settings, users[: args.reads], args.redis_url)
    emit("reads", figures)


if __name__ == "__main__":
    main()

"""Recommendation latency over loopback HTTP at a fixed request rate.

Setup: a generated archive history (Zipf users and items) through the nightly batch
into the SQLite online store (co-visitation, popularity, user rows), and recent views
and clicks of a few thousand users through the bus and the streaming feature
consumer. The server (the gateway with the recommendations router, and the feature
consumer keeping as_of current, as in ``headwater up``) runs pinned to core 0; this
process is the load generator, pinned to core 1.

Open loop: requests are scheduled at a fixed rate and latency is measured from each
request's scheduled time, so a slow server cannot hide its queueing. Baseline in the
same run and at the same rate: ``GET /v1/health``; also ``GET /v1/users/{id}/features``.

    .venv/bin/python bench/bench_recommend.py [--rate 500] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from bench_batch import generate_day

SERVER = textwrap.dedent("""
    import sys, threading
    import uvicorn
    from headwater.config import Settings
    from headwater.gateway.app import create_app
    from headwater.gateway.reco_routes import router
    from headwater.application import Application

    settings = Settings.from_env(sys.argv[1])
    hw = Application(settings)
    runtime = hw.consumer("features")
    threading.Thread(target=runtime.run, kwargs={"install_signal_handlers": False},
                     daemon=True).start()

    def add_router(app):
        paths = {getattr(r, "path", "") for r in app.routes}
        if "/v1/users/{user_id}/recommendations" not in paths:
            app.include_router(router)

    app = create_app(hw, extra=add_router)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                access_log=False)
""")


def prepare(home: Path, events: int, users: int, items: int, active: int) -> list[str]:
    """History -> archive -> batch; recent activity -> bus -> features. Active users."""
    import pyarrow as pa

    from headwater.application import Application
    from headwater.archive import ArchiveTable
    from headwater.batch import BatchRunner, BatchSettings
    from headwater.bus import Message
    from headwater.config import Settings
    from headwater.contract.signal import Signal, encode_signal

    settings = Settings.from_env(home)
    hw = Application(settings)
    hw.register_shipped_contracts()
    table = ArchiveTable(settings.archive_url)
    last = datetime.now(UTC).date() - timedelta(days=1)
    days = 14
    table.append(
        pa.concat_tables(
            [
                generate_day(
                    last - timedelta(days=d), events // days, d * (events // days), users, items, d
                )
                for d in range(days)
            ]
        )
    )
    runner = BatchRunner(table, hw.online, BatchSettings(), hw.control)
    runner.run()
    runner.close()
    # Recent activity of the active users: items drawn from the batch's popular items.
    rng = random.Random(5)
    popular = hw.online.keys("item_covis")[:5000]
    now = datetime.now(UTC)
    chosen = [f"u{rng.randrange(users):07d}" for _ in range(active)]
    signals = [
        Signal(
            event_id=f"r{n}-{j}",
            event_type="view" if j % 3 else "click",
            user_id=user,
            surface="web",
            item_id=rng.choice(popular),
            timestamp=now - timedelta(seconds=rng.randrange(600)),
            received_at=now,
        )
        for n, user in enumerate(chosen)
        for j in range(8)
    ]
    for start in range(0, len(signals), 500):
        chunk = signals[start : start + 500]
        hw.bus.publish([Message(s.user_id, encode_signal(s)) for s in chunk])
    runtime = hw.consumer("features")
    while runtime.step():
        pass
    runtime.close()
    hw.close()
    return chosen


def reader_key(home: Path) -> str:
    """A key with the reader role (the recommendation service's)."""
    from headwater.application import Application
    from headwater.config import Settings

    with Application(Settings.from_env(home)) as hw:
        secret, _ = hw.keys.create("recommendations", roles=("reader",), kind="service")
    return secret


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, key: str
) -> tuple[int, bytes]:
    auth = f"Authorization: Bearer {key}\r\n"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n{auth}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


async def load(
    port: int, path_of: Any, count: int, rate: float, key: str, connections: int = 32
) -> tuple[list[float], list[dict[str, Any]]]:
    """``count`` requests at ``rate``/s, open loop, over keep-alive connections.

    A minimal HTTP/1.1 client (a few tens of microseconds a request) so the generator is
    not what is measured. Latency (ms) counts from each request's scheduled time.
    """
    latencies: list[float] = []
    samples: list[dict[str, Any]] = []
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (job := await queue.get()) is not None:
            i, due = job
            status, body = await _request(reader, writer, path_of(i), key)
            latencies.append((time.perf_counter() - due) * 1000)
            if status != 200:
                raise RuntimeError(f"{status}: {body[:200]!r}")
            if i % 50 == 0:
                samples.append(json.loads(body))
        writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = time.perf_counter() + 0.2
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((i, due))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return latencies, samples


def summary(latencies: list[float]) -> dict[str, float]:
    """Percentiles in milliseconds."""
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "requests": len(ordered),
        "p50_ms": pct(0.5),
        "p90_ms": pct(0.9),
        "p99_ms": pct(0.99),
        "max_ms": round(ordered[-1], 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--active", type=int, default=3000)
    parser.add_argument("--port", type=int, default=8097)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="hw-bench-reco-"))
    server: subprocess.Popen[bytes] | None = None
    try:
        began = time.perf_counter()
        active = prepare(home, args.events, args.users, args.items, args.active)
        key = reader_key(home)
        setup_s = time.perf_counter() - began
        print(f"prepared in {setup_s:.1f}s", file=sys.stderr, flush=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
        server = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, "-c", SERVER, str(home), str(args.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {1})
        base = f"http://127.0.0.1:{args.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/v1/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.2)
        rng = random.Random(9)
        # 80% users with fresh recent activity, 20% users with batch history only or none.
        users = [
            rng.choice(active) if rng.random() < 0.8 else f"u{rng.randrange(args.users):07d}"
            for _ in range(int(args.rate * args.seconds))
        ]
        count = len(users)
        port = args.port
        asyncio.run(
            load(
                port,
                lambda i: f"/v1/users/{users[i]}/recommendations?k=20",
                min(count, 500),
                args.rate,
                key,
            )
        )  # warm-up
        print("warmed up", file=sys.stderr, flush=True)
        runs: dict[str, Any] = {}
        reco, samples = asyncio.run(
            load(
                port,
                lambda i: f"/v1/users/{users[i]}/recommendations?k=20&surface=web",
                count,
                args.rate,
                key,
            )
        )
        runs["recommendations"] = summary(reco)
        health, _ = asyncio.run(load(port, lambda _i: "/v1/health", count, args.rate, key))
        runs["baseline_health"] = summary(health)
        feats, _ = asyncio.run(
            load(port, lambda i: f"/v1/users/{users[i]}/features", count, args.rate, key)
        )
        runs["features"] = summary(feats)
        emit(
            "recommend",
            {
                "rate_rps": args.rate,
                "seconds": args.seconds,
                "setup_seconds": round(setup_s, 1),
                "history_events": args.events,
                "active_users": args.active,
                "latency": runs,
                "p99_ratio_to_health": round(
                    runs["recommendations"]["p99_ms"]
                    / max(0.01, runs["baseline_health"]["p99_ms"]),
                    2,
                ),
                "answers": {
                    "sampled": len(samples),
                    "fresh_share": round(sum(not s["stale"] for s in samples) / len(samples), 3),
                    "mean_items": round(statistics.fmean(len(s["items"]) for s in samples), 1),
                    "covisitation_share": round(
                        statistics.fmean(
                            sum(x["source"] == "covisitation" for x in s["items"])
                            / max(1, len(s["items"]))
                            for s in samples
                        ),
                        3,
                    ),
                    "fallbacks": {
                        str(k): sum(s["fallback"] == k for s in samples)
                        for k in (None, "popularity", "batch_history")
                    },
                },
                "target": "p99 < 10 ms at 500 requests/s",
            },
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Gateway throughput and latency over loopback HTTP, one gateway process on one core.

The gateway (``headwater serve``, embedded backends) runs pinned to one core; the load
generator runs on the other. Phase 1 sends batches of 500 realistic signals as fast as
the gateway takes them: accepted events/s, each validated and durably on the bus.
Phase 2 sends at half that rate, open loop, and reports batch latency percentiles.
Baseline, same run, same server stack: an endpoint that reads the body and answers 200
without doing anything (the HTTP ceiling of one core). Beside the rate, the gateway's CPU
(user + system, ``/proc/<pid>/stat``) per 1,000 events accepted in phase 1: steadier
than the rate on a noisy machine; and the cores its event loop's thread and its other
threads used in phase 1 (``/proc/<pid>/task``). An older checkout can be paired with this one:
``PYTHONPATH=<checkout>/src .venv/bin/python bench/bench_gateway.py``.

    .venv/bin/python bench/bench_gateway.py [--batches 400] [--seconds 10] [--paced-rate 90]
    .venv/bin/python bench/bench_gateway.py --tombstones 100000   # a platform's erasures
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from _workload import cpu_seconds, launch, thread_cpu_seconds
from headwater.access.keys import ApiKeys
from headwater.config import Settings
from headwater.contract.loader import default_definitions
from headwater.control import open_control_database
from headwater.control.base import ControlDatabase
from headwater.demo.traffic import Traffic
from headwater.erasure.ledger import ErasureLedger
from headwater.erasure.subject import SubjectSealer
from headwater.registry.contracts import ContractRegistry

ECHO_APP = textwrap.dedent("""
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"accepted": 500}'})
""")


async def flood(url: str, key: str, bodies: list[bytes], concurrency: int) -> tuple[float, int]:
    queue = list(reversed(bodies))
    accepted = 0
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        while queue:
            body = queue.pop()
            r = await client.post(url, content=body, headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code}: {r.text[:300]}")
            accepted += int(msgspec.json.decode(r.content)["accepted"])

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        start_t = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - start_t, accepted


async def paced(url: str, key: str, bodies: list[bytes], rate_rps: float) -> list[float]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies: list[float] = []

    async def one(client: httpx.AsyncClient, body: bytes) -> None:
        t0 = time.perf_counter()
        r = await client.post(url, content=body, headers=headers)
        latencies.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {r.text[:300]}")

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
        tasks = []
        start_t = time.perf_counter()
        for i, body in enumerate(bodies):
            # Open loop: requests leave on schedule whether or not earlier ones finished.
            delay = start_t + i / rate_rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(client, body)))
        await asyncio.gather(*tasks)
    return latencies


def bodies_for(n_batches: int, seed: int) -> list[bytes]:
    traffic = Traffic(users=100_000, items=50_000, seed=seed)
    return [msgspec.json.encode(traffic.batch(500)) for _ in range(n_batches)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def add_tombstones(db: ControlDatabase, n: int) -> None:
    """``n`` tombstones of users the traffic never names, as the ledger's table holds them
    (written with the columns every release has; an older checkout can read them)."""
    ErasureLedger(db, SubjectSealer(secrets.token_bytes(32)))  # the ledger's tables
    with db.transaction() as tx:
        for i in range(n):
            tx.execute(
                "INSERT INTO hw_tombstones (subject_hash, erased_at_ms, request_id) "
                "VALUES (?, ?, ?)",
                (secrets.token_hex(32), 1_700_000_000_000 + i, f"bench-{i}"),
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--paced-rate",
        type=float,
        help="phase 2's batches/s (default: half of phase 1's rate); a fixed rate lets two "
        "checkouts' latencies be compared at the same load",
    )
    parser.add_argument(
        "--tombstones",
        type=int,
        default=0,
        help="erased users in the control plane before the gateway starts (none of them "
        "in the traffic): what a platform that has run that many erasures carries",
    )
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "hw"
        settings = Settings.from_env(home)
        db = open_control_database(settings.control_url)
        ContractRegistry(db).apply(default_definitions())
        key, _ = ApiKeys(db).create("bench", event_types=("*",), rate_limit_eps=10_000_000)
        if args.tombstones:
            add_tombstones(db, args.tombstones)
        db.close()
        env = dict(os.environ, HEADWATER_HOME=str(home), HEADWATER_LOG_LEVEL="WARNING")
        py = sys.executable

        echo_file = Path(tmp) / "echo_app.py"
        echo_file.write_text(ECHO_APP)
        echo = launch(
            [
                py,
                "-m",
                "uvicorn",
                "--app-dir",
                tmp,
                "echo_app:app",
                "--port",
                "8711",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            8711,
            env,
            Path(tmp) / "echo.log",
        )
        flood_bodies = bodies_for(args.batches, seed=1)
        try:
            el, _ = asyncio.run(
                flood("http://127.0.0.1:8711/v1/signals", key, flood_bodies, args.concurrency)
            )
            echo_eps = args.batches * 500 / el
        finally:
            echo.terminate()
            echo.wait()

        gw = launch(
            [py, "-m", "headwater.cli", "serve", "--port", "8712"], 8712, env, Path(tmp) / "gw.log"
        )
        try:
            url = "http://127.0.0.1:8712/v1/signals"
            cpu_before = cpu_seconds(gw.pid)
            threads_before = thread_cpu_seconds(gw.pid)
            el, accepted = asyncio.run(flood(url, key, flood_bodies, args.concurrency))
            gateway_cpu_ms = (cpu_seconds(gw.pid) - cpu_before) / accepted * 1e6
            threads_after = thread_cpu_seconds(gw.pid)
            spent = {tid: cpu - threads_before.get(tid, 0.0) for tid, cpu in threads_after.items()}
            loop_cores = spent.pop(gw.pid, 0.0) / el
            other_cores = sum(spent.values()) / el
            gateway_eps = accepted / el
            rate = args.paced_rate or gateway_eps / 2 / 500
            paced_bodies = bodies_for(int(rate * args.seconds), seed=2)
            latencies = asyncio.run(paced(url, key, paced_bodies, rate))
        finally:
            gw.terminate()
            gw.wait()
    emit(
        "gateway",
        {
            "tombstones": args.tombstones,
            "batch_events": 500,
            "batch_bytes_avg": round(statistics.mean(len(b) for b in flood_bodies)),
            "concurrency": args.concurrency,
            "gateway_accepted_eps": round(gateway_eps),
            "gateway_cpu_ms_per_1k_events": round(gateway_cpu_ms, 1),
            # Cores used during the flood by the event loop's thread and by the others
            # (the ingest writer: claim, bus write, confirmation). What the loop does not
            # use of its one core, it waited (for the writer) or was not scheduled.
            "loop_thread_cores": round(loop_cores, 2),
            "other_threads_cores": round(other_cores, 2),
            "target_eps": 150_000,
            "echo_baseline_eps": round(echo_eps),
            "gateway_vs_echo": round(gateway_eps / echo_eps, 3),
            "half_load_batches_per_s": round(rate, 1),
            "half_load_requests": len(latencies),
            "latency_ms_p50": round(pct(latencies, 0.50), 2),
            "latency_ms_p99": round(pct(latencies, 0.99), 2),
            "latency_ms_max": round(max(latencies), 2),
            "p99_target_ms": 25,
        },
    )


if __name__ == "__main__":
    main()

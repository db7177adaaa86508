"""The read clients' cost per read: FeatureClient and AsyncFeatureClient on their own
HTTP/1.1 connections against the same clients through httpx, in the same run.

A local server (uvicorn, pinned to the server core) answers every read at once with a
user's features as the API answers them (about 1 KB); the client runs on the other
core. Reported per read: the client's CPU (``time.process_time``) and, for reads one
after another, the wall-clock latency p50 and p99. The async client reads with
``--concurrency`` reads in flight. Transports alternate, ``--rounds`` times; the best
round of each is kept.

    .venv/bin/python bench/bench_read_client.py [--reads 4000] [--rounds 3] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit
from _workload import launch
from bench_sdk import ANSWERING_APP
from headwater.client import AsyncFeatureClient, FeatureClient
from headwater.wire import UserFeatures

PORT = 8742


def answer() -> bytes:
    """A user's features as the API answers them with the default features."""
    at = "2026-12-06T10:00:00.000Z"
    return msgspec.json.encode(
        UserFeatures(
            user_id="u-123456",
            features={
                "counts": {"view": 412, "click": 57, "purchase": 4, "save": 9},
                "window_counts": {"1h": {"view": 12}, "24h": {"view": 88, "click": 11}},
                "recently_viewed": [{"item_id": f"sku-{i}", "at": at} for i in range(10)],
                "last_event_at": at,
                "active_surfaces_24h": ["web", "ios"],
            },
            as_of=at,
            age_s=0.4,
            stale=False,
            stale_features=[],
            budgets_s={"view": 60.0, "click": 60.0, "purchase": 30.0},
        )
    )


def blocking_round(url: str, reads: int, *, httpx_path: bool) -> tuple[float, list[float]]:
    """CPU seconds per read, and each read's latency, for reads one after another."""
    transport = httpx.HTTPTransport() if httpx_path else None
    with FeatureClient(url, "key", transport=transport) as client:
        latencies = []
        start = time.process_time()
        for i in range(reads):
            began = time.perf_counter()
            if not client.get(f"u{i % 1000}").found:
                raise RuntimeError("not found")
            latencies.append(time.perf_counter() - began)
        return (time.process_time() - start) / reads, latencies


def async_round(url: str, reads: int, concurrency: int, *, httpx_path: bool) -> float:
    """CPU seconds per read with ``concurrency`` reads in flight."""

    async def run() -> float:
        transport = httpx.AsyncHTTPTransport() if httpx_path else None
        async with AsyncFeatureClient(url, "key", transport=transport) as client:
            left = reads

            async def reader() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    if not (await client.get(f"u{left % 1000}")).found:
                        raise RuntimeError("not found")

            start = time.process_time()
            await asyncio.gather(*(reader() for _ in range(concurrency)))
            return (time.process_time() - start) / reads

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})  # the answering server has the other core
    cpu: dict[str, list[float]] = {
        f"{c}_{t}": [] for c in ("blocking", "async") for t in ("http1", "httpx")
    }
    latency: dict[str, list[float]] = {"http1": [], "httpx": []}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "answering_app.py").write_text(ANSWERING_APP)
        (Path(tmp) / "answer.json").write_bytes(answer())
        env = dict(os.environ, BENCH_ANSWER=str(Path(tmp) / "answer.json"))
        argv = [sys.executable, "-m", "uvicorn", "--app-dir", tmp, "answering_app:app"]
        argv += ["--port", str(PORT), "--log-level", "warning", "--no-access-log"]
        server = launch(argv, PORT, env, Path(tmp) / "server.log")
        try:
            url = f"http://127.0.0.1:{PORT}"
            blocking_round(url, 200, httpx_path=False)  # imports, first connections
            for _ in range(args.rounds):
                for httpx_path in (False, True):
                    tag = "httpx" if httpx_path else "http1"
                    spent, seen = blocking_round(url, args.reads, httpx_path=httpx_path)
                    cpu[f"blocking_{tag}"].append(spent)
                    if not latency[tag] or statistics.median(seen) < statistics.median(
                        latency[tag]
                    ):
                        latency[tag] = seen
                    cpu[f"async_{tag}"].append(
                        async_round(url, args.reads, args.concurrency, httpx_path=httpx_path)
                    )
        finally:
            server.terminate()
            server.wait()
    best = {k: min(v) for k, v in cpu.items()}

    def quantile(values: list[float], q: float) -> float:
        return round(statistics.quantiles(values, n=100)[q - 1] * 1e6)

    figures: dict[str, Any] = {
        "reads_per_round": args.reads,
        "async_concurrency": args.concurrency,
        "cpu_us_per_read": {k: round(v * 1e6) for k, v in best.items()},
        "cpu_us_per_read_runs": {k: [round(x * 1e6) for x in v] for k, v in cpu.items()},
        "blocking_http1_vs_httpx": round(best["blocking_http1"] / best["blocking_httpx"], 3),
        "async_http1_vs_httpx": round(best["async_http1"] / best["async_httpx"], 3),
        "blocking_latency_us": {
            tag: {"p50": quantile(seen, 50), "p99": quantile(seen, 99)}
            for tag, seen in latency.items()
        },
    }
    emit("read_client", figures)


if __name__ == "__main__":
    main()

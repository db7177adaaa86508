"""Rate-limiter throughput: takes/s of each backend on one thread, beside memory://.

    .venv/bin/python bench/bench_ratelimit.py [--takes 20000] [--repeat 3]
        [--redis redis://127.0.0.1:6379/15] [--postgres postgresql://127.0.0.1:5432/test]

One thread calls ``take(key, 1, rate, burst)`` on one key, back to back, with a limit
high enough that every take is admitted (the path a gateway takes for each request):

- ``memory://`` (the in-process limiter the gateway used so far), the baseline;
- ``sqlite:///`` in a temporary directory (WAL, synchronous=OFF, one BEGIN IMMEDIATE
  transaction per take);
- ``redis://`` (one EVALSHA per take) and ``postgresql://`` (one upsert per take) on
  the servers named, skipped when they cannot be reached.

For each: the best takes/s of ``--repeat`` runs, the p50 and p99 latency of one take
over a last timed run, and ``memory_over_backend``, the memory figure divided by the
backend's (the cost of sharing the limit, measured in the same run). Prints one JSON
object on stdout.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import best_of, emit  # bench/ is on sys.path when run as a script
from headwater.errors import BackendUnavailableError
from headwater.ratelimit import RateLimiter, open_rate_limiter

#: A limit no run reaches: every take is admitted.
RATE = 1e12
BURST = 1e12
WARMUP = 1_000


def _measure(limiter: RateLimiter, takes: int, repeat: int) -> dict[str, Any]:
    key = f"bench-{uuid.uuid4().hex[:8]}"
    for _ in range(WARMUP):
        limiter.take(key, 1, RATE, BURST)

    def run() -> int:
        for _ in range(takes):
            limiter.take(key, 1, RATE, BURST)
        return takes

    rate, _ = best_of(repeat, run)
    clock = time.perf_counter_ns
    samples = []
    for _ in range(takes):
        start = clock()
        limiter.take(key, 1, RATE, BURST)
        samples.append(clock() - start)
    samples.sort()
    return {
        "takes_per_s": round(rate),
        "p50_us": round(samples[len(samples) // 2] / 1000, 2),
        "p99_us": round(samples[int(len(samples) * 0.99)] / 1000, 2),
    }


def _postgres_schema(url: str) -> tuple[str, str]:
    """A private schema for the run: the URL that uses it, and its name."""
    import psycopg

    schema = f"hw_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}", schema


def _drop_postgres_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _drop_redis_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def main() -> None:
    """Measure every backend and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--takes", type=int, default=20_000, help="takes per timed run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--redis",
        default=os.environ.get("HEADWATER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("HEADWATER_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test"),
    )
    args = parser.parse_args()

    backends: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        prefix = f"hwbench-{uuid.uuid4().hex[:8]}"
        urls = {
            "memory": "memory://",
            "sqlite": f"sqlite:///{Path(tmp) / 'ratelimit.db'}",
            "redis": f"{args.redis}?prefix={prefix}",
        }
        for name, url in urls.items():
            try:
                limiter = open_rate_limiter(url)
                try:
                    backends[name] = _measure(limiter, args.takes, args.repeat)
                finally:
                    limiter.close()
            except BackendUnavailableError as exc:
                backends[name] = {"skipped": str(exc)}
        if "takes_per_s" in backends["redis"]:
            _drop_redis_keys(args.redis, prefix)
        try:
            pg_url, schema = _postgres_schema(args.postgres)
        except Exception as exc:
            backends["postgres"] = {"skipped": f"PostgreSQL at {args.postgres}: {exc}"}
        else:
            try:
                limiter = open_rate_limiter(pg_url)
                try:
                    backends["postgres"] = _measure(limiter, args.takes, args.repeat)
                finally:
                    limiter.close()
            finally:
                _drop_postgres_schema(args.postgres, schema)

    memory = backends["memory"]["takes_per_s"]
    for figures in backends.values():
        if "takes_per_s" in figures:
            figures["memory_over_backend"] = round(memory / figures["takes_per_s"], 1)
    emit(
        "ratelimit",
        {
            "takes_per_run": args.takes,
            "repeat": args.repeat,
            "thread": "one, takes back to back on one key, every take admitted",
            "backends": backends,
        },
    )


if __name__ == "__main__":
    main()

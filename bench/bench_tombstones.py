"""What a process pays to follow the tombstones, as their number grows.

Every consumer runtime, every gateway and the orchestrator look for new tombstones
every 2 s (``TombstoneFilter.refresh``). Tombstones are never removed, so the cost of a
look is measured against how many the control plane holds (``--tombstones``, default
100,000), on SQLite and on PostgreSQL (``HEADWATER_BENCH_POSTGRES_URL``, default the
local server; a private schema, dropped after):

- ``full_read``: every tombstone read into a dict (a filter's first read; before
  ``tombstone_log``, every refresh did this);
- ``refresh_nothing_new`` and ``refresh_one_new``: a filter's later refresh, when no
  tombstone and when one tombstone was added since its last;
- ``cpu_share_at_2s``: the CPU each costs per 2 s, as a fraction of one core.

Times are the median of ``--repeat`` reads, CPU (``time.process_time``) and wall.

    .venv/bin/python bench/bench_tombstones.py [--tombstones 100000] [--repeat 9]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from headwater.control import open_control_database
from headwater.control.base import ControlDatabase
from headwater.erasure.ledger import ErasureLedger
from headwater.erasure.subject import SubjectHasher, SubjectSealer
from headwater.erasure.tombstone_log import write_tombstone
from headwater.erasure.tombstones import TombstoneFilter

KEY = secrets.token_bytes(32)


def fill(db: ControlDatabase, n: int) -> None:
    """``n`` tombstones, numbered 1..n as the ledger numbers them (written in bulk)."""
    with db.transaction() as tx:
        for i in range(n):
            tx.execute(
                "INSERT INTO hw_tombstones (subject_hash, erased_at_ms, request_id, seq) "
                "VALUES (?, ?, ?, ?)",
                (secrets.token_hex(32), 1_700_000_000_000 + i, f"bench-{i}", i + 1),
            )
        tx.execute(
            "INSERT INTO hw_tombstone_counter (id, n) VALUES (1, ?) "
            "ON CONFLICT (id) DO UPDATE SET n = excluded.n",
            (n,),
        )


def timed(
    repeat: int, fn: Callable[[], Any], before: Callable[[], Any] | None = None
) -> dict[str, float]:
    """Median CPU and wall milliseconds of ``fn`` (``before`` runs untimed before each)."""
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(repeat):
        if before is not None:
            before()
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append((time.process_time() - c) * 1000)
        wall.append((time.perf_counter() - w) * 1000)
    return {
        "cpu_ms": round(statistics.median(cpu), 3),
        "wall_ms": round(statistics.median(wall), 3),
    }


def measure(url: str, n: int, repeat: int) -> dict[str, Any]:
    db = open_control_database(url)
    try:
        ledger = ErasureLedger(db, SubjectSealer(KEY))
        start = time.perf_counter()
        fill(db, n)
        filled_s = time.perf_counter() - start
        tombs = TombstoneFilter(ledger, SubjectHasher(KEY))
        assert len(tombs.erased_at) == n
        full = timed(repeat, lambda: ledger.tombstones(None))
        nothing = timed(repeat, lambda: tombs.refresh(force=True))
        added = iter(range(repeat))

        def add_one() -> None:
            with db.transaction() as tx:
                write_tombstone(tx, secrets.token_hex(32), 1_800_000_000_000, f"new-{next(added)}")

        one = timed(repeat, lambda: tombs.refresh(force=True), before=add_one)
        assert len(tombs.erased_at) == n + repeat
        return {
            "tombstones": n,
            "fill_s": round(filled_s, 1),
            "full_read": full,
            "refresh_nothing_new": nothing,
            "refresh_one_new": one,
            "cpu_share_at_2s": {
                "full_read": round(full["cpu_ms"] / 2000, 4),
                "refresh_nothing_new": round(nothing["cpu_ms"] / 2000, 6),
            },
            "full_read_vs_refresh_cpu": round(full["cpu_ms"] / max(nothing["cpu_ms"], 1e-3), 1),
        }
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tombstones", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        figures["sqlite"] = measure(f"sqlite:///{tmp}/control.db", args.tombstones, args.repeat)
    if not args.no_postgres:
        import psycopg

        base = os.environ.get("HEADWATER_BENCH_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")
        schema = f"hw_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        try:
            sep = "&" if "?" in base else "?"
            url = f"{base}{sep}options=-csearch_path%3D{schema}"
            figures["postgresql"] = measure(url, args.tombstones, args.repeat)
        finally:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
    emit("tombstones", figures)


if __name__ == "__main__":
    main()

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

Then what the filter costs a consumer per record (``per_record_ns``): polls of 50,000
signal records over ``--users`` Zipf-drawn users (the workload of bench_features.py),
with no tombstone and with one tombstone (of a user not in the polls: every record is
looked at, none dropped). ``poll``: the runtime's filter now (``poll_phases`` and
``TombstoneFilter.split``, each user of a poll hashed once); ``per_record``, the
loop the runtime ran before, a ``drops`` call for every record; ``before``, that loop
with the hasher as it was (``hmac.new`` per user id), the baseline in the same run.
The subject hasher's cache is cleared before each pass, as a consumer's is cold for
users it has not seen in its last 200,000.

Last, the gateway's screen (``screen_ns_per_event``): validated batches of 500 events
(the demo traffic of bench_gateway.py, ``--users`` users) screened with one tombstone
(of a user not in them). ``now``: ``ErasedUsers.screen``; ``before``, the baseline in
the same run: the screen as it was, a hash and a lookup per event (``hmac.new``) and
the batch rebuilt.

    .venv/bin/python bench/bench_tombstones.py [--tombstones 100000] [--repeat 9]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
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
from _workload import signal_messages
from headwater.bus.base import KIND_ERASURE, KIND_SIGNAL, Record
from headwater.contract.definition import RegisteredEventType
from headwater.contract.loader import default_definitions
from headwater.contract.validator import BatchResult, SignalValidator
from headwater.control import open_control_database
from headwater.control.base import ControlDatabase
from headwater.demo.traffic import Traffic
from headwater.erasure.ledger import ErasureLedger
from headwater.erasure.subject import SubjectHasher, SubjectSealer
from headwater.erasure.tombstone_log import write_tombstone
from headwater.erasure.tombstones import TombstoneFilter
from headwater.ingest.erased import ErasedUsers
from headwater.runtime.erasure_runs import poll_phases

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


class HmacNew(SubjectHasher):
    """The subject hasher as it was: ``hmac.new`` for each id the cache does not hold."""

    def __call__(self, user_id: str) -> str:
        found = self._cache.get(user_id)
        if found is None:
            found = hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[user_id] = found
        return found


def per_record_loop(tombs: TombstoneFilter, records: list[Record]) -> int:
    """The runtime's filter as it was: every record's kind, then ``drops``."""
    segment: list[Record] = []
    for record in records:
        if record.kind == KIND_ERASURE:
            continue
        if not tombs.drops(record):
            segment.append(record)
    return len(segment)


def poll_split(tombs: TombstoneFilter, records: list[Record]) -> int:
    """The runtime's filter now (``ConsumerRuntime._process``, without the handler)."""
    kept = 0
    for phase in poll_phases(records):
        segment = phase if phase is records else [r for r in phase if r.kind == KIND_SIGNAL]
        kept += len(tombs.split(segment)[0])
    return kept


def filter_cost(events: int, users: int, repeat: int) -> dict[str, Any]:
    msgs = signal_messages(events, users=users, items=50_000)
    records = [Record(0, i, m.key, KIND_SIGNAL, m.value, 0) for i, m in enumerate(msgs)]
    polls = [records[i : i + 50_000] for i in range(0, len(records), 50_000)]
    out: dict[str, Any] = {"records": len(records), "users": users}
    for tombstones in (0, 1):
        for name, hasher, fn in (
            ("before", HmacNew(KEY), per_record_loop),
            ("per_record", SubjectHasher(KEY), per_record_loop),
            ("poll", SubjectHasher(KEY), poll_split),
        ):
            tombs = TombstoneFilter(None, hasher)
            if tombstones:
                tombs.add("no-such-user", 2_000_000_000_000)
            best = float("inf")
            for _ in range(repeat):
                hasher._cache.clear()
                start = time.perf_counter()
                kept = sum(fn(tombs, poll) for poll in polls)
                best = min(best, time.perf_counter() - start)
                assert kept == len(records)
            out[f"{name}_ns_{tombstones}_tombstones"] = round(best / len(records) * 1e9)
    for tombstones in (0, 1):
        poll = out[f"poll_ns_{tombstones}_tombstones"]
        before = out[f"before_ns_{tombstones}_tombstones"]
        out[f"before_vs_poll_{tombstones}_tombstones"] = round(before / poll, 2)
    return out


def screen_per_event(tombs: TombstoneFilter, result: BatchResult) -> BatchResult:
    """The gateway's screen as it was: every event hashed and looked up, the batch rebuilt."""
    erased = tombs.erased_at
    if not erased:
        return result
    kept = []
    kept_index = []
    for index, event in zip(result.accepted_indices, result.accepted, strict=True):
        at = erased.get(tombs.hasher(event.user_id))
        if at is None or event.timestamp.timestamp() * 1000 > at:
            kept.append(event)
            kept_index.append(index)
    return BatchResult(result.total, kept, kept_index, list(result.rejections))


def screen_cost(batches: int, users: int, repeat: int) -> dict[str, Any]:
    validator = SignalValidator(RegisteredEventType(d, 1) for d in default_definitions().values())
    traffic = Traffic(users=users, items=50_000, seed=7)
    results = [validator.validate_events(traffic.batch(500)) for _ in range(batches)]
    events = sum(len(r.accepted) for r in results)
    out: dict[str, Any] = {"batches": batches, "events": events, "users": users}
    for name, hasher in (("before", HmacNew(KEY)), ("now", SubjectHasher(KEY))):
        tombs = TombstoneFilter(None, hasher)
        tombs.add("no-such-user", 2_000_000_000_000)
        screen = ErasedUsers(tombs).screen if name == "now" else None
        best = float("inf")
        for _ in range(repeat):
            hasher._cache.clear()
            start = time.perf_counter()
            for result in results:
                kept = screen(result) if screen is not None else screen_per_event(tombs, result)
                assert len(kept.accepted) == len(result.accepted)
            best = min(best, time.perf_counter() - start)
        out[f"{name}_ns"] = round(best / events * 1e9)
    out["before_vs_now"] = round(out["before_ns"] / out["now_ns"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tombstones", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--records", type=int, default=500_000, help="for per_record_ns")
    parser.add_argument("--users", type=int, default=1_000_000, help="for per_record_ns")
    args = parser.parse_args()
    figures: dict[str, Any] = {
        "per_record_ns": filter_cost(args.records, args.users, max(3, args.repeat // 3)),
        "screen_ns_per_event": screen_cost(400, args.users, max(3, args.repeat // 3)),
    }
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

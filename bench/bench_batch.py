"""The nightly batch over a generated history: wall time and peak memory.

Generates ``--events`` signals (default 10 million) straight into a Delta table in the
archive's schema with pyarrow (Zipf-skewed users and items, ~60 days, the traffic
mix of the demo teams), then runs the batch in a fresh process and reports:

- the first nightly run (every day computed, outputs written to a SQLite online store),
- a second run (nothing changed: only the outputs' refresh),
- a one-day backfill,
- an erasure: the archive's DELETE of one active user, then the batch participant's
  recompute of that user's days and of the item tables (``--no-erasure`` skips it).

Peak memory is the batch process's own peak RSS (``resource.getrusage``), not the
generator's. On Spark the engine's JVM is a child of the batch process: its peak RSS
(``VmHWM`` of each child, read before the session stops) is added to the Python
process's peak, an upper bound on the peak of the two together.

``--engines duckdb,spark`` runs the same steps on each engine in turn over its own
copy of the same generated archive (each with its own control plane, day aggregates and
online store), each in a fresh process; Spark runs on ``--spark-master`` (``local[2]``).

    .venv/bin/python bench/bench_batch.py [--events 10000000] [--days 60] [--dir DIR]
        [--engines duckdb,spark] [--spark-master local[2]] [--first-run-only]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, peak_rss_mb
from headwater.archive import ARCHIVE_SCHEMA, ArchiveTable
from headwater.demo.traffic import BRANDS, CATEGORIES
from headwater.erasure.subject import SubjectHasher

# The demo teams' event mix, as 100 slots; surfaces weighted like the demo's team cycle.
_TYPES = (
    ["view"] * 55
    + ["click"] * 25
    + ["save"] * 5
    + ["add_to_cart"] * 7
    + ["purchase"] * 3
    + ["dismiss"] * 2
    + ["search"] * 2
    + ["rating"]
)
_SURFACES = ["web"] * 3 + ["ios"] * 3 + ["android"] * 3 + ["search", "checkout", "reviews"]

#: The keyed hash the generated history is written with, and erased by.
SUBJECT = SubjectHasher(b"bench-key" * 4)


def _zipf_ranks(u: pa.Array, n: int, s: float) -> pa.Array:
    """Ranks in [0, n) with a power-law skew: the inverse of the continuous Zipf CDF."""
    if abs(s - 1.0) < 1e-9:
        x = pc.power(float(n + 1), u)
    else:
        a = 1.0 - s
        x = pc.power(pc.add(1.0, pc.multiply(u, (n + 1) ** a - 1.0)), 1.0 / a)
    ranks = pc.subtract(pc.cast(pc.floor(x), pa.int64()), 1)
    return pc.min_element_wise(pc.max_element_wise(ranks, 0), n - 1)


def _ids(prefix: str, ranks: pa.Array, n: int, width: int) -> pa.Array:
    # Scatter ranks over ids so popular ids are not the smallest numbers.
    scattered = pc.subtract(
        pc.multiply(ranks, 2_654_435_761),
        pc.multiply(pc.divide(pc.multiply(ranks, 2_654_435_761), n), n),
    )
    text = pc.utf8_lpad(pc.cast(scattered, pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, text, "")


def _mod(values: pa.Array, k: int) -> pa.Array:
    return pc.subtract(values, pc.multiply(pc.divide(values, k), k))


def generate_day(day: date, n: int, seq: int, users: int, items: int, seed: int) -> pa.Table:
    """``n`` signals on ``day`` in the archive's schema."""
    r = [pc.random(n, initializer=seed * 7919 + k) for k in range(7)]
    user_rank = _zipf_ranks(r[0], users, 1.0)
    item_rank = _zipf_ranks(r[1], items, 1.1)
    etype = pa.array(_TYPES).take(pc.cast(pc.floor(pc.multiply(r[2], len(_TYPES))), pa.int64()))
    surface = pa.array(_SURFACES).take(
        pc.cast(pc.floor(pc.multiply(r[3], len(_SURFACES))), pa.int64())
    )
    start_us = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1_000_000)
    ts_int = pc.add(start_us, pc.cast(pc.floor(pc.multiply(r[4], 86_400_000_000 - 1)), pa.int64()))
    ts = pc.cast(ts_int, pa.timestamp("us", tz="UTC"))
    received = pc.cast(pc.add(ts_int, 1_500_000), pa.timestamp("us", tz="UTC"))
    is_search = pc.equal(etype, "search")
    item = pc.if_else(is_search, pa.scalar(None, pa.string()), _ids("i", item_rank, items, 6))
    category = pa.array(CATEGORIES).take(_mod(item_rank, len(CATEGORIES)))
    brand = pa.array(BRANDS).take(_mod(pc.divide(item_rank, 7), len(BRANDS)))
    catalog = pc.is_in(etype, pa.array(["view", "click", "add_to_cart", "purchase"]))
    category = pc.if_else(catalog, category, pa.scalar(None, pa.string()))
    brand = pc.if_else(catalog, brand, pa.scalar(None, pa.string()))
    priced = pc.is_in(etype, pa.array(["add_to_cart", "purchase"]))
    price = pc.if_else(
        priced, pc.round(pc.add(3.0, pc.multiply(r[5], 297.0)), 2), pa.scalar(None, pa.float64())
    )
    quantity = pc.if_else(
        priced,
        pc.cast(pc.add(1, pc.floor(pc.multiply(r[6], 3))), pa.int32()),
        pa.scalar(None, pa.int32()),
    )
    rating = pc.if_else(
        pc.equal(etype, "rating"),
        pc.add(1.0, pc.floor(pc.multiply(r[5], 5))),
        pa.scalar(None, pa.float64()),
    )
    payload = pc.if_else(
        catalog,
        pc.binary_join_element_wise('{"category":"', category, '","brand":"', brand, '"}', ""),
        pa.scalar(None, pa.string()),
    )
    event_id = pc.binary_join_element_wise(
        "b", pc.cast(pa.array(range(seq, seq + n), pa.int64()), pa.string()), ""
    )
    columns: dict[str, Any] = {
        "event_id": event_id,
        "event_type": etype,
        "user_id": _ids("u", user_rank, users, 7),
        "item_id": item,
        "surface": surface,
        "timestamp": ts,
        "received_at": received,
        "producer": surface,
        "schema_version": pa.array([1] * n, pa.int32()),
        "payload": payload,
        "category": category,
        "brand": brand,
        "price": price,
        "quantity": quantity,
        "rating": rating,
        "date": pa.array([day.isoformat()] * n, pa.string()),
    }
    users_col = columns["user_id"].to_pylist()
    columns["subject"] = pa.array([SUBJECT(u) for u in users_col], pa.string())
    return pa.Table.from_arrays(
        [pc.cast(columns[f.name], f.type) for f in ARCHIVE_SCHEMA], schema=ARCHIVE_SCHEMA
    )


def generate(root: Path, events: int, days: int, users: int, items: int) -> dict[str, Any]:
    """Write the history: one large file per day, a Delta commit per ten days."""
    table = ArchiveTable(str(root / "archive"))
    last = datetime.now(UTC).date() - timedelta(days=1)
    first = last - timedelta(days=days - 1)
    per_day = events // days
    began = time.perf_counter()
    pending: list[pa.Table] = []
    for i in range(days):
        n = per_day + (events - per_day * days if i == days - 1 else 0)
        pending.append(generate_day(first + timedelta(days=i), n, i * per_day, users, items, i))
        if len(pending) == 10 or i == days - 1:
            table.append(pa.concat_tables(pending))
            pending = []
    return {
        "events": events,
        "days": days,
        "users": users,
        "items": items,
        "first_day": first.isoformat(),
        "last_day": last.isoformat(),
        "generate_seconds": round(time.perf_counter() - began, 1),
        "archive_files": sum(len(d.files) for d in table.days().values()),
        "archive_mb": round(
            sum(p.stat().st_size for p in (root / "archive").rglob("*.parquet")) / 2**20, 1
        ),
    }


def _children_peak_rss_mb() -> float:
    """The peak RSS of this process's child processes (Spark's JVM), from /proc."""
    total = 0.0
    me = str(Path("/proc/self").resolve().name)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[1] != me:
                continue
            status = (stat.parent / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


def run_batch(
    root: Path,
    erasure: bool,
    engine: str = "duckdb",
    master: str = "local[2]",
    *,
    first_only: bool = False,
) -> dict[str, Any]:
    """In the batch process: nightly, again, backfill, erasure; timings and peak RSS."""
    from headwater.archive import ArchiveConsumer, ErasureLedger
    from headwater.batch import BatchErasureParticipant, BatchRunner, BatchSettings
    from headwater.control import open_control_database
    from headwater.erasure.events import ErasureEvent
    from headwater.online import open_online_store

    archive_url = str(root / "archive")
    table = ArchiveTable(archive_url)
    store = open_online_store(f"sqlite:///{root / 'online.db'}")
    control = open_control_database(f"sqlite:///{root / 'control.db'}")
    cfg = BatchSettings(engine=engine, spark_master=master)
    runner = BatchRunner(table, store, cfg, control)
    out: dict[str, Any] = {"engine": engine}
    if engine == "spark":
        out["spark_master"] = master
        began = time.perf_counter()
        with runner.connect():  # the session starts here: reported on its own
            pass
        out["session_start_seconds"] = round(time.perf_counter() - began, 2)
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        print(line, file=sys.stderr, flush=True)

    began = time.perf_counter()
    first = runner.run(progress=progress)
    out["nightly_first"] = {
        "seconds": round(time.perf_counter() - began, 2),
        "days": len(first.days_computed),
        "events": first.events,
        "outputs": {k: v for k, v in first.outputs.items() if k != "as_of"},
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if first_only:
        erasure = False
    began = time.perf_counter()
    second = runner.run(progress=progress) if not first_only else None
    if second is not None:
        out["nightly_unchanged"] = {
            "seconds": round(time.perf_counter() - began, 2),
            "days": len(second.days_computed),
        }
        one_day = date.fromisoformat(first.days_computed[len(first.days_computed) // 2])
        began = time.perf_counter()
        runner.run(start=one_day, end=one_day, progress=progress)
        out["backfill_one_day"] = {"seconds": round(time.perf_counter() - began, 2)}
    if erasure:
        with runner.connect() as con:  # an active user, but not the heaviest one
            user = con.execute(
                f"SELECT user_id FROM {runner.derived.relation(con, 'user_item_day')} "
                "GROUP BY user_id ORDER BY count(*) DESC LIMIT 1 OFFSET 100"
            ).fetchall()[0][0]
        archive = ArchiveConsumer(
            table,
            ErasureLedger(archive_url),
            SUBJECT,
            retention_hours=168,
            vacuum_interval_s=None,
        )
        event = ErasureEvent(request_id="bench", user_id=user, requested_at=datetime.now(UTC))
        began = time.perf_counter()
        (conf,) = archive.erase(event)
        archive_s = time.perf_counter() - began
        began = time.perf_counter()
        (derived,) = BatchErasureParticipant(runner, archive.ledger).erase(event)
        out["erasure"] = {
            "user_rows": conf.rows_removed,
            "partitions": len(conf.evidence["partitions"]),
            "archive_delete_seconds": round(archive_s, 2),
            "batch_recompute_seconds": round(time.perf_counter() - began, 2),
            "batch_partitions_recomputed": len(derived.evidence["partitions_recomputed"]),
        }
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if engine == "spark":
        out["python_peak_rss_mb"] = out["peak_rss_mb"]
        out["jvm_peak_rss_mb"] = round(_children_peak_rss_mb(), 1)
        out["peak_rss_mb"] = round(out["python_peak_rss_mb"] + out["jvm_peak_rss_mb"], 1)
    out["progress"] = lines
    runner.close()
    store.close()
    return out


def _ratios(results: dict[str, Any]) -> dict[str, float]:
    """Spark over DuckDB for the first run's seconds and the peak RSS."""
    d, s = results.get("duckdb"), results.get("spark")
    if not d or not s:
        return {}
    return {
        "nightly_first_seconds": round(
            s["nightly_first"]["seconds"] / d["nightly_first"]["seconds"], 2
        ),
        "peak_rss": round(s["peak_rss_mb"] / d["peak_rss_mb"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--dir", type=Path, default=None, help="Keep the data here.")
    parser.add_argument("--no-erasure", action="store_true")
    parser.add_argument(
        "--first-run-only",
        action="store_true",
        help="Only the first nightly run (no second run, backfill or erasure).",
    )
    parser.add_argument(
        "--engines", default="duckdb", help="Comma-separated: duckdb, spark (each in turn)."
    )
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--batch-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.batch_only is not None:
        doc = run_batch(
            args.batch_only,
            not args.no_erasure,
            engines[0],
            args.spark_master,
            first_only=args.first_run_only,
        )
        print(json.dumps(doc))
        return
    root = args.dir or Path(tempfile.mkdtemp(prefix="hw-bench-batch-"))
    if (root / "archive").exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        history = generate(root, args.events, args.days, args.users, args.items)
        print(
            f"generated {args.events:,} events in {history['generate_seconds']}s",
            file=sys.stderr,
            flush=True,
        )
        results: dict[str, Any] = {}
        for engine in engines:
            # Each engine on its own copy: the erasure step changes the archive.
            where = root / engine if len(engines) > 1 else root
            if where != root:
                shutil.copytree(root / "archive", where / "archive")
            cmd = [sys.executable, __file__, "--batch-only", str(where), "--engines", engine]
            cmd += ["--spark-master", args.spark_master]
            if args.no_erasure:
                cmd.append("--no-erasure")
            if args.first_run_only:
                cmd.append("--first-run-only")
            done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
            results[engine] = json.loads(done.stdout)
        if len(engines) == 1:
            emit("batch", {"history": history, "batch": results[engines[0]]})
            return
        emit("batch", {"history": history, "engines": results, "ratios": _ratios(results)})
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

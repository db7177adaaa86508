"""Point-in-time training sets (``features history``): wall time and peak memory.

Generates ``--signals`` archived signals (default 1 million; the archive generator of
bench_batch.py: Zipf-skewed users and items over ``--days`` days) and ``--labels``
label rows (default 100,000: users drawn from the archived rows, so as skewed, at
uniformly random times over the archive's span, a 0/1 label column), then, each in a
fresh process so each peak RSS is its own:

- ``features history``: ``TrainingSetBuilder.write`` (the streaming pass replayed per
  label over the archive, with the default features and lateness bound) into Parquet;
- the baseline: DuckDB's plain ``ASOF JOIN`` of the same label rows against the same
  archive files (each label with its user's last signal at or before its time), written
  to Parquet: what a hand-written join costs, with no feature computed.

The batch part of the training set is not exercised: the generated control plane has
no completed batch run, so every label's batch columns are null.

    .venv/bin/python bench/bench_history.py [--labels 100000] [--signals 1000000]
    .venv/bin/python bench/bench_history.py --labels 1000000 --signals 10000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, peak_rss_mb
from bench_batch import generate
from headwater.archive import ArchiveTable


def make_labels(root: Path, labels: int, seed: int = 7) -> dict[str, Any]:
    """Label rows: users of random archived rows, times uniform over the archive's span."""
    table = ArchiveTable(str(root / "archive"))
    rows = table.read(["user_id", "timestamp"])
    lo = pc.min(rows.column("timestamp")).cast(pa.int64()).as_py()
    hi = pc.max(rows.column("timestamp")).cast(pa.int64()).as_py()
    pick = pc.cast(
        pc.floor(pc.multiply(pc.random(labels, initializer=seed), rows.num_rows)), pa.int64()
    )
    when = pc.add(
        lo,
        pc.cast(
            pc.floor(pc.multiply(pc.random(labels, initializer=seed + 1), hi - lo)), pa.int64()
        ),
    )
    label = pc.cast(pc.less(pc.random(labels, initializer=seed + 2), 0.1), pa.int8())
    out = pa.table(
        {
            "user_id": rows.column("user_id").take(pick),
            "timestamp": pc.cast(when, pa.timestamp("us", tz="UTC")),
            "purchased": label,
        }
    )
    pq.write_table(out, root / "labels.parquet")
    return {"labels": labels, "label_users": len(pc.unique(out.column("user_id")))}


def run_history(root: Path) -> dict[str, Any]:
    """In a fresh process: the training set, written to Parquet."""
    from headwater.features.engine import FeatureEngine
    from headwater.features.history import TrainingSetBuilder

    table = ArchiveTable(str(root / "archive"))
    builder = TrainingSetBuilder(table, FeatureEngine(), None, memory_limit="1GB")
    began = time.perf_counter()
    report = builder.write(root / "labels.parquet", root / "train.parquet")
    seconds = time.perf_counter() - began
    return {
        "seconds": round(seconds, 2),
        "rows": report.rows,
        "users": report.users,
        "signals_replayed": report.signals,
        "users_replayed_from_start": report.replays,
        "features": len(report.features),
        "labels_per_s": round(report.rows / seconds),
        "out_mb": round((root / "train.parquet").stat().st_size / 2**20, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def run_asof(root: Path) -> dict[str, Any]:
    """In a fresh process: DuckDB's plain as-of join of the labels and the archive."""
    import duckdb

    from headwater.archive.table import quote_sql

    table = ArchiveTable(str(root / "archive"))
    files = ", ".join(quote_sql(f) for d in table.days().values() for f in d.files)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET memory_limit = '1GB'")
    began = time.perf_counter()
    con.execute(
        f"""COPY (
            SELECT l.*, a.event_id, a.event_type, a.item_id, a.surface,
                   a."timestamp" AS event_at
            FROM read_parquet({quote_sql(str(root / "labels.parquet"))}) l
            ASOF LEFT JOIN read_parquet([{files}], hive_partitioning = true,
                                        hive_types = {{'date': VARCHAR}}) a
              ON l.user_id = a.user_id AND l."timestamp" >= a."timestamp"
        ) TO {quote_sql(str(root / "asof.parquet"))} (FORMAT parquet)"""
    )
    seconds = time.perf_counter() - began
    rows = pq.read_metadata(root / "asof.parquet").num_rows
    con.close()
    return {"seconds": round(seconds, 2), "rows": rows, "peak_rss_mb": round(peak_rss_mb(), 1)}


def _child(mode: str, root: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, f"--{mode}-only", str(root)],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"the {mode} process failed (exit {done.returncode})")
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", type=int, default=100_000)
    parser.add_argument("--signals", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--dir", type=Path, default=None, help="Keep the data here.")
    parser.add_argument("--history-only", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--asof-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.history_only:
        print(json.dumps(run_history(args.history_only)))
        return
    if args.asof_only:
        print(json.dumps(run_asof(args.asof_only)))
        return
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-history-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        archive = generate(root, args.signals, args.days, args.users, args.items)
        labels = make_labels(root, args.labels)
        history = _child("history", root)
        asof = _child("asof", root)
        emit(
            "features_history",
            {
                "archive": archive,
                "labels": labels,
                "history": history,
                "duckdb_asof_join": asof,
                "ratio_history_to_asof": round(history["seconds"] / asof["seconds"], 1),
            },
        )
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

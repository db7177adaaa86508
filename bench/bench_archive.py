"""The archive consumer's signal path: bus records to Delta commits, on one core.

Realistic signals as the gateway puts them on the bus (demo traffic, Zipf users), in
batches as the buffered bus hands them to the archive consumer. Measured in the same
run, alternating, so the ratio holds on a noisy machine:

- ``convert``: record bytes to the archive's Arrow table, the compiled reader
  (``records_to_arrow``) against msgspec decoding plus ``signals_to_arrow`` (the path
  before the reader, and the fallback where it is not built);
- ``consume``: ``ArchiveConsumer.handle`` end to end (conversion, the Delta append with
  its positions, small-file merges) over a fresh table, both ways.

    .venv/bin/python bench/bench_archive.py [--signals 200000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, peak_rss_mb, pin_one_core
from _workload import signal_messages
from headwater.archive import ArchiveConsumer, ArchiveTable, ErasureLedger
from headwater.archive import consumer as consumer_module
from headwater.archive.schema import COMPILED, records_to_arrow
from headwater.bus.base import KIND_SIGNAL, Record
from headwater.erasure.subject import SubjectHasher

SUBJECT = SubjectHasher(b"b" * 32)


def _convert(batches: list[list[bytes]], compiled: bool) -> float:
    start = time.perf_counter()
    for values in batches:
        records_to_arrow(values, SUBJECT, compiled=compiled)
    return time.perf_counter() - start


def _consume(batches: list[list[Record]], compiled: bool) -> float:
    convert: Callable[..., Any] = functools.partial(records_to_arrow, compiled=compiled)
    consumer_module.records_to_arrow = convert  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="hw-bench-archive-") as home:
        url = str(Path(home) / "archive")
        consumer = ArchiveConsumer(
            ArchiveTable(url), ErasureLedger(url), SUBJECT, vacuum_interval_s=None
        )
        try:
            start = time.perf_counter()
            for batch in batches:
                consumer.handle(batch)
            return time.perf_counter() - start
        finally:
            consumer.table.close()
            consumer_module.records_to_arrow = records_to_arrow  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--signals", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not COMPILED:
        raise SystemExit("the compiled reader (headwater.archive._columns) is not built")
    pin_one_core()
    msgs = signal_messages(args.signals)
    values = [m.value for m in msgs]
    batches = [values[i : i + args.batch] for i in range(0, len(values), args.batch)]
    records = [
        [
            Record(0, i + j, m.key, KIND_SIGNAL, m.value, 0)
            for j, m in enumerate(msgs[i : i + args.batch])
        ]
        for i in range(0, len(msgs), args.batch)
    ]
    figures: dict[str, dict[str, list[float]]] = {
        "convert": {"compiled": [], "python": []},
        "consume": {"compiled": [], "python": []},
    }
    for _ in range(args.repeat):
        for compiled in (True, False):
            way = "compiled" if compiled else "python"
            figures["convert"][way].append(args.signals / _convert(batches, compiled))
            figures["consume"][way].append(args.signals / _consume(records, compiled))
    out: dict[str, Any] = {"signals": args.signals, "batch": args.batch, "repeat": args.repeat}
    for part, ways in figures.items():
        best = {way: max(rates) for way, rates in ways.items()}
        out[part] = {
            "compiled_signals_per_s": round(best["compiled"]),
            "python_signals_per_s": round(best["python"]),
            "ratio": round(best["compiled"] / best["python"], 2),
            "compiled_us_per_signal": round(1e6 / best["compiled"], 3),
            "python_us_per_signal": round(1e6 / best["python"], 3),
        }
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    emit("archive", out)


if __name__ == "__main__":
    main()

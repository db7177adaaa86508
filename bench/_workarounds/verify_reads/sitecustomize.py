"""Benchmark-only workaround, not headwater's code: the erasure verifier reads files
instead of mapping them.

``headwater.erasure.verify._count_in_file`` maps each SQLite file (database, ``-wal``,
``-shm``) with ``mmap``. When another connection truncates the write-ahead log while the
map is read (the scrub after an erasure), a read past the new end of the file raises
SIGBUS and kills the process: ``headwater up`` dies, and under ``up --processes`` the
orchestrator restarts again and again (BENCHMARKS.md, trust round). With this directory
on ``PYTHONPATH``, every headwater process reads the file into memory instead, so that
the erasure timings can be taken at all. Delete it once the verifier no longer maps
live files.

    PYTHONPATH=bench/_workarounds/verify_reads BENCH_SERVER_CORES=0,1 \\
        .venv/bin/python bench/bench_erasure.py --processes
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

try:
    import headwater.erasure.verify as _verify
except ImportError:  # not a headwater environment
    _verify = None


def _count_in_file(path: Path, ids: Sequence[str]) -> dict[str, int]:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return {}
    if not data or _verify is None:
        return {}
    return _verify.count_ids(data, ids)


if _verify is not None:
    _verify._count_in_file = _count_in_file  # type: ignore[assignment]

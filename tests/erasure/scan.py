"""The auditor's byte scan: every file under a directory, raw and decoded, for needles.

Raw bytes catch SQLite files and their write-ahead logs, Delta log JSON, logs and
exports; Parquet files are also decoded (their pages are compressed, so a raw search
alone would miss them), every value of every column rendered as text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pyarrow.parquet as pq


def _decoded(path: Path) -> bytes:
    try:
        table = pq.read_table(path)
    except Exception:
        return b""
    return json.dumps(table.to_pylist(), default=str).encode()


def scan(root: Path, needles: Iterable[str]) -> dict[str, list[str]]:
    """Each needle found, with the files (relative to ``root``) that hold it."""
    wanted = [n.encode() for n in needles]
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".parquet" or data[:4] == b"PAR1":
            data += _decoded(path)
        for needle in wanted:
            if needle in data:
                found.setdefault(needle.decode(), []).append(str(path.relative_to(root)))
    return found


def files_scanned(root: Path) -> list[str]:
    """Every file the scan reads (so a test can say what it covered)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

"""The independent verification an erasure passes before it is ``completed``.

A participant confirms with its own scan; the verifier checks every store again by a
path of its own: it reads the store's files or keys directly (a byte search of SQLite
files and their write-ahead logs, every Parquet file and log entry of the Delta
table, a key scan on Redis) and looks for the raw user id (known until completion)
and the subject's keyed hash. Its findings, one per store, are the audit's evidence;
a store with residue is sent back to ``failed`` and chased again.
"""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from headwater._time import now_text
from headwater._url import sqlite_path

__all__ = ["Finding", "StoreCheck", "Verifier", "scan_files"]

log = logging.getLogger("headwater.erasure")


class Finding(msgspec.Struct, frozen=True):
    """What the verification found in one store."""

    participant: str
    method: str
    residue: int | None  # occurrences of the user found; None: the store cannot be read
    checked_at: str
    detail: dict[str, Any] = {}

    @property
    def clean(self) -> bool:
        """Nothing of the user found (a store that cannot be read counts as clean only
        with its reason in ``detail``: a bus that keeps records until retention)."""
        return not self.residue


#: One store's check: (raw user id, subject hash) -> the finding's method, residue, detail.
StoreCheck = Callable[[str, str], tuple[str, int | None, dict[str, Any]]]


#: Bytes that continue an identifier: a hit followed or preceded by one is another id
#: that merely contains this one ("u001" inside "u0012"), not a copy of it.
_ID_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@")


def _whole(view: Any, at: int, end: int) -> bool:
    before = view[at - 1] if at > 0 else 0
    after = view[end] if end < len(view) else 0
    return before not in _ID_BYTES and after not in _ID_BYTES


def _count_in_file(path: Path, needles: Sequence[bytes]) -> int:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        found = 0
        for needle in needles:
            at = view.find(needle)
            while at != -1:
                found += _whole(view, at, at + len(needle))
                at = view.find(needle, at + 1)
        return found


def _count_in_bytes(data: bytes, needle: bytes) -> int:
    found = 0
    at = data.find(needle)
    while at != -1:
        found += _whole(data, at, at + len(needle))
        at = data.find(needle, at + 1)
    return found


def scan_files(paths: Sequence[Path], needles: Sequence[str]) -> dict[str, int]:
    """Occurrences of any of ``needles`` per file (files with none are left out)."""
    raw = [n.encode() for n in needles if n]
    hits = {str(p): _count_in_file(p, raw) for p in paths}
    return {p: n for p, n in hits.items() if n}


def sqlite_files(url: str) -> list[Path]:
    """A SQLite store's main file with its write-ahead log and shared-memory file."""
    main = Path(sqlite_path(url))
    return [main, Path(f"{main}-wal"), Path(f"{main}-shm")]


def sqlite_byte_scan(url: str) -> StoreCheck:
    """Search the store's files byte by byte, read-only, for the raw user id."""
    files = sqlite_files(url)

    def check(user_id: str, subject: str) -> tuple[str, int | None, dict[str, Any]]:
        del subject  # SQLite stores key rows by the raw id: that is what must be gone
        hits = scan_files(files, [user_id])
        return (
            "byte search of the database file, its write-ahead log and shared memory",
            sum(hits.values()),
            {"files": [str(f) for f in files if f.exists()], "hits": hits},
        )

    return check


def directory_byte_scan(root: Path, what: str) -> StoreCheck:
    """Search every file under ``root`` (batch outputs on local disk) for the raw id."""

    def check(user_id: str, subject: str) -> tuple[str, int | None, dict[str, Any]]:
        del subject
        files = [Path(d) / n for d, _s, names in os.walk(root) for n in names]
        hits = scan_files(files, [user_id])
        return (f"byte search of every file of {what}", sum(hits.values()), {"hits": hits})

    return check


def archive_scan(uri: str, storage_options: Mapping[str, str] | None) -> StoreCheck:
    """Every file of the Delta table, referenced or not: Parquet files decoded (user id and
    subject columns), every other file (the log, checkpoints) searched byte by byte."""

    def check(user_id: str, subject: str) -> tuple[str, int | None, dict[str, Any]]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq
        from deltalake.fs import DeltaStorageHandler

        fs = pafs.PyFileSystem(DeltaStorageHandler(uri, dict(storage_options or {}) or None))
        infos = fs.get_file_info(pafs.FileSelector("", recursive=True, allow_not_found=True))
        hits: dict[str, int] = {}
        parquet = 0
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            path = info.path.lstrip("/")
            if path.endswith(".parquet") and not path.startswith("_delta_log"):
                parquet += 1
                names = pq.read_schema(path, filesystem=fs).names
                cols = [c for c in ("user_id", "subject") if c in names]
                table = pq.read_table(path, columns=cols, filesystem=fs)
                n = 0
                for col, value in (("user_id", user_id), ("subject", subject)):
                    if col in cols:
                        column = table.column(col).cast(pa.string())
                        n += pc.sum(pc.equal(column, pa.scalar(value))).as_py() or 0
                if n:
                    hits[path] = int(n)
                continue
            with fs.open_input_file(path) as f:
                data = f.read()
            n = _count_in_bytes(data, user_id.encode())
            if n:
                hits[path] = n
        method = (
            "every Parquet file of the table decoded (user_id, subject), every log and "
            "checkpoint file searched byte by byte"
        )
        return (
            method,
            sum(hits.values()),
            {"parquet_files": parquet, "files": len(infos), "hits": hits},
        )

    return check


def redis_key_scan(client: Any, prefix: str) -> StoreCheck:
    """``SCAN MATCH`` over the server's keys of the deployment for the raw user id."""

    def check(user_id: str, subject: str) -> tuple[str, int | None, dict[str, Any]]:
        del subject
        pattern = f"{prefix}:*{_glob_escape(user_id)}*"
        keys = [k.decode() for k in client.scan_iter(match=pattern, count=1000)]
        return (
            f"SCAN MATCH {prefix}:*<user id>* over every key",
            len(keys),
            {"keys": keys[:20]},
        )

    return check


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


class Verifier:
    """The checks of each participant's store, run together before completion."""

    def __init__(self, checks: Mapping[str, Sequence[StoreCheck]]) -> None:
        self.checks = {name: list(found) for name, found in checks.items()}

    def verify(self, user_id: str, subject: str, participants: Sequence[str]) -> dict[str, Finding]:
        """One finding per participant; a store without a check of its own says so."""
        out: dict[str, Finding] = {}
        for name in participants:
            checks = self.checks.get(name)
            if not checks:
                out[name] = Finding(
                    participant=name,
                    method="none: no independent check for this store; its own scan stands",
                    residue=None,
                    checked_at=now_text(),
                )
                continue
            methods: list[str] = []
            details: list[dict[str, Any]] = []
            residue: int | None = 0
            for check in checks:
                try:
                    method, found, detail = check(user_id, subject)
                except Exception as exc:  # noqa: BLE001 - an unreadable store is not verified
                    log.warning("erasure verification of %s failed: %s", name, exc)
                    method, found, detail = "check failed", 1, {"error": f"{exc}"[:500]}
                methods.append(method)
                details.append(detail)
                residue = None if found is None or residue is None else residue + found
            detail = details[0] if len(details) == 1 else {"checks": details}
            out[name] = Finding(
                participant=name,
                method="; ".join(methods),
                residue=residue,
                checked_at=now_text(),
                detail=_without(detail, user_id),  # the audit outlives the raw id
            )
        return out


def _without(value: Any, user_id: str) -> Any:
    """``value`` with every occurrence of the raw id replaced by ``<user id>``."""
    if isinstance(value, str):
        return value.replace(user_id, "<user id>")
    if isinstance(value, dict):
        return {_without(k, user_id): _without(v, user_id) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without(v, user_id) for v in value]
    return value

"""The auditor's byte scan: every file under a directory, raw and decoded, for needles.

Raw bytes catch SQLite files and their write-ahead logs, Delta log JSON, logs and
exports; Parquet files are also decoded (their pages are compressed, so a raw search
alone would miss them), every value of every column rendered as text.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from headwater._livefile import live_file


def _forms(needle: str) -> list[bytes]:
    """The needle's bytes, and the base64 text of them at each of the three alignments a
    base64 encoder may meet them in (only the groups made of the needle's bytes alone):
    a copy kept base64-encoded (a dead letter's record) is a copy too."""
    raw = needle.encode()
    out = [raw]
    for shift in range(3):
        first = -(-shift // 3)  # the first 3-byte group wholly inside the needle
        last = (shift + len(raw)) // 3  # one past the last such group
        if last - first >= 2:
            encoded = base64.b64encode(b"\0" * shift + raw + b"\0\0")
            out.append(encoded[first * 4 : last * 4])
    return out


def _find(data: bytes, needles: Iterable[str]) -> list[str]:
    """The needles found in ``data`` in any of their forms."""
    return [n for n in needles if any(form in data for form in _forms(n))]


def _read(path: Path) -> bytes:
    """The whole file, through a descriptor never closed: the stack under test runs in
    this process, and closing a descriptor of a database file would drop SQLite's locks
    on it (``headwater._livefile``)."""
    with live_file(path) as f:
        if f is None:
            return b""
        pieces = []
        while piece := f.read(16 * 2**20):
            pieces.append(piece)
        return b"".join(pieces)


def _decoded(path: Path) -> bytes:
    try:
        table = pq.read_table(path)
    except Exception:
        return b""
    return json.dumps(table.to_pylist(), default=str).encode()


def scan(root: Path, needles: Iterable[str]) -> dict[str, list[str]]:
    """Each needle found, with the files (relative to ``root``) that hold it."""
    wanted = list(needles)
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = _read(path)
        if path.suffix == ".parquet" or data[:4] == b"PAR1":
            data += _decoded(path)
        for needle in _find(data, wanted):
            found.setdefault(needle, []).append(str(path.relative_to(root)))
    return found


def files_scanned(root: Path) -> list[str]:
    """Every file the scan reads (so a test can say what it covered)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def scan_redis(client: Any, prefix: str, needles: Iterable[str]) -> dict[str, list[str]]:
    """Every key of ``prefix`` and every value it holds (any type), for needles."""
    wanted = list(needles)
    found: dict[str, list[str]] = {}
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        kind = client.type(key).decode()
        parts: list[bytes] = [key]
        if kind == "string":
            parts.append(client.get(key) or b"")
        elif kind == "hash":
            parts += [b for kv in client.hgetall(key).items() for b in kv]
        elif kind == "set":
            parts += list(client.smembers(key))
        elif kind == "zset":
            parts += list(client.zrange(key, 0, -1))
        elif kind == "list":
            parts += list(client.lrange(key, 0, -1))
        elif kind == "stream":
            parts += [json.dumps(client.xrange(key), default=str).encode()]
        data = b"\0".join(parts)
        for needle in _find(data, wanted):
            found.setdefault(needle, []).append(key.decode())
    return found


def scan_postgres(url: str, schema: str, needles: Iterable[str]) -> dict[str, list[str]]:
    """Every page of every table, index and TOAST table of ``schema``, read raw with
    ``pageinspect``: live tuples, dead tuples and free space alike."""
    import psycopg

    wanted = list(needles)
    found: dict[str, list[str]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect SCHEMA public")
        (where,) = conn.execute(
            "SELECT extnamespace::regnamespace::text FROM pg_extension "
            "WHERE extname = 'pageinspect'"
        ).fetchone()
        rels = conn.execute(
            "SELECT c.oid::regclass::text, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'i') "
            "UNION SELECT t.oid::regclass::text, t.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_class t ON t.oid = c.reltoastrelid WHERE n.nspname = %s",
            (schema, schema),
        ).fetchall()
        for rel, _kind in rels:
            (pages,) = conn.execute(
                "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int",
                (rel,),
            ).fetchone()
            for block in range(int(pages)):
                (page,) = conn.execute(
                    f"SELECT {where}.get_raw_page(%s::text, %s::int)", (rel, block)
                ).fetchone()
                for needle in _find(bytes(page), wanted):
                    found.setdefault(needle, []).append(f"{rel} page {block}")
    return found


def scan_nats_stream(url: str, stream: str, needles: Iterable[str]) -> dict[str, list[str]]:
    """Every message still in a JetStream stream (subject, headers and data)."""
    import asyncio

    import nats
    from nats.js.errors import NotFoundError

    wanted = list(needles)
    found: dict[str, list[str]] = {}

    async def run() -> None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    msg = await js.get_msg(stream, seq)
                except NotFoundError:
                    continue  # deleted
                data = (msg.subject or "").encode() + repr(msg.headers).encode() + (msg.data or b"")
                for needle in _find(data, wanted):
                    found.setdefault(needle, []).append(f"{stream} seq {seq}")
        finally:
            await nc.close()

    asyncio.run(run())
    return found


def dead_letter_counts(letters: Any, users: list[str]) -> dict[str, int]:
    """The dead letters still stored that name each user (``DeadLetterStore.naming``)."""
    return {user: len(ids) for user, ids in letters.naming(users).items()}

"""The store checks the erasure verification runs: each reads one kind of store directly,
by a path of its own, and counts every occurrence of the users it is given.

- :func:`sqlite_byte_scan`: a SQLite file, its write-ahead log and shared memory, byte
  by byte, each hit placed in its page's records;
- :func:`archive_scan`: every file of the Delta archive, referenced or not: Parquet
  files decoded, the log and checkpoints searched byte by byte;
- :func:`redis_scan`: one ``SCAN`` over the deployment's keys, each name and value
  searched (every master of a Redis Cluster).

Each returns a :data:`~headwater.erasure.verify.StoreCheck` for the
:class:`~headwater.erasure.verify.Verifier` to run.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from headwater._idsearch import Needles, TokenSet, _count_in_database, _count_in_file
from headwater._sqlite_pages import database_shape
from headwater._url import sqlite_path
from headwater.erasure.verify import CheckResult, StoreCheck, Subject, owners, per_user

__all__ = ["archive_scan", "redis_scan", "sqlite_byte_scan"]


def sqlite_byte_scan(url: str) -> StoreCheck:
    """Search the store's files byte by byte, read-only, for the raw user ids and the
    users' event ids."""
    main = Path(sqlite_path(url))
    wal, shm = Path(f"{main}-wal"), Path(f"{main}-shm")

    def check(users: Sequence[Subject]) -> CheckResult:
        needles = Needles(owners(users))
        shape = database_shape(main)
        if shape is None:  # no database yet: whatever the files hold is searched whole
            hits = {str(f): _count_in_file(f, needles) for f in (main, wal)}
        else:
            hits = {
                str(main): _count_in_database(main, needles, shape, wal=False),
                str(wal): _count_in_database(wal, needles, shape, wal=True),
            }
        hits[str(shm)] = _count_in_file(shm, needles)
        method = (
            "byte search of the database file, its write-ahead log and shared memory "
            "for the user ids and event ids, each hit placed in its page's records"
        )
        return method, per_user(users, hits)

    return check


#: How much of the archive's distinct ids the verifier keeps between passes.
_DISTINCT_CACHE_BYTES = 256 * 2**20


class _DistinctIds:
    """Per file that never changes once written, what a pass keeps of it (a data file's
    :class:`_FileIds`, a log commit's :class:`TokenSet`), so a later pass reads only the
    files it has not seen; bounded."""

    def __init__(self, max_bytes: int = _DISTINCT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._files: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._bytes = 0

    def get(self, path: str, size: int, read: Callable[[], Any]) -> Any:
        key = (path, size)
        found = self._files.get(key)
        if found is not None:
            self._files.move_to_end(key)
            return found
        found = read()
        self._files[key] = found
        self._bytes += found.nbytes
        while self._bytes > self.max_bytes and len(self._files) > 1:
            _, old = self._files.popitem(last=False)
            self._bytes -= old.nbytes
        return found


class _FileIds:
    """What the archive check keeps of one data file: its distinct user ids and subjects,
    and a 64-bit hash of each event id (8 bytes a row, not the id's 30 or more)."""

    def __init__(self, ids: Any, events: Any) -> None:
        self.ids = ids
        self.events = events
        self.nbytes = int(ids.nbytes) + int(events.nbytes)


def _hashes(con: Any, values: Any) -> Any:
    """DuckDB's 64-bit ``hash`` of each string of an Arrow array."""
    import pyarrow as pa

    if not len(values):
        return pa.array([], pa.uint64())
    con.register("hw_values", pa.table({"v": values}))
    try:
        found = con.sql("SELECT hash(v) AS h FROM hw_values").to_arrow_table()
        return found.column("h").combine_chunks()
    finally:
        con.unregister("hw_values")


class _ArchivePass:
    """One verification pass over the archive's files for some users."""

    def __init__(self, fs: Any, users: Sequence[Subject], con: Any) -> None:
        import pyarrow as pa

        self.fs = fs
        self.con = con
        searched = owners(users)
        self.by_value = searched | {u.subject: u.user_id for u in users}
        self.wanted = pa.array(list(self.by_value), type=pa.string())
        self.needles = Needles(searched)
        self.wanted_ids = pa.array([u.user_id for u in users] + [u.subject for u in users])
        events = [e for u in users for e in u.event_ids]
        self.wanted_events = _hashes(con, pa.array(events, pa.string()))

    def columns(self, path: str) -> Any:
        import pyarrow.parquet as pq

        names = pq.read_schema(path, filesystem=self.fs).names
        cols = [c for c in ("user_id", "subject", "event_id") if c in names]
        return pq.read_table(path, columns=cols, filesystem=self.fs)

    def ids_of(self, path: str) -> _FileIds:
        """What the cache keeps of a data file."""
        import pyarrow as pa
        import pyarrow.compute as pc

        table = self.columns(path)
        ids = [
            pc.unique(table.column(name).cast(pa.string()))
            for name in ("user_id", "subject")
            if name in table.column_names
        ]
        events = (
            _hashes(self.con, table.column("event_id").cast(pa.string()))
            if "event_id" in table.column_names
            else pa.array([], pa.uint64())
        )
        return _FileIds(pa.chunked_array(ids, type=pa.string()), events)

    def may_hold(self, seen: _FileIds) -> bool:
        """Users by value; events by their 64-bit hashes (a collision only costs the exact
        count of :meth:`rows_of`, which compares the values themselves)."""
        import pyarrow.compute as pc

        if pc.any(pc.is_in(seen.ids, value_set=self.wanted_ids)).as_py():
            return True
        return bool(
            len(self.wanted_events)
            and pc.any(pc.is_in(seen.events, value_set=self.wanted_events)).as_py()
        )

    def rows_of(self, path: str) -> dict[str, int]:
        """Occurrences per user (its raw id as the key, which per_user maps to itself)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        counts: dict[str, int] = {}
        table = self.columns(path)
        for col in table.column_names:
            values = table.column(col).cast(pa.string())
            found = values.filter(pc.is_in(values, value_set=self.wanted))
            for value, n in zip(*pc.value_counts(found).flatten(), strict=True):
                user = self.by_value[value.as_py()]
                counts[user] = counts.get(user, 0) + int(n.as_py())
        return counts


#: The Delta log's files that are never rewritten once written: numbered commits and
#: checkpoints (``_last_checkpoint`` and the like are read on every pass).
_IMMUTABLE_LOG = re.compile(r"(^|/)_delta_log/\d{20}\.(json|checkpoint(\.\d+\.\d+)?\.parquet)$")


def _tokens_of(read: Callable[[str], bytes], path: str) -> TokenSet:
    return TokenSet(read(path))


def _local_files(root: str) -> Iterator[tuple[str, int]]:
    """Every file under a local directory: its path from ``root`` and its size."""
    base = Path(root)
    for directory, _, names in os.walk(base):
        for name in names:
            full = Path(directory) / name
            try:
                size = full.stat().st_size
            except FileNotFoundError:
                continue  # removed since the listing
            yield full.relative_to(base).as_posix(), size


def _files_under(fs: Any) -> Iterator[tuple[str, int]]:
    """Every file under an object-store prefix, through the Delta storage handler."""
    import pyarrow.fs as pafs

    for info in fs.get_file_info(pafs.FileSelector("", recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File:
            yield info.path.lstrip("/"), int(info.size)


def archive_scan(uri: str, storage_options: Mapping[str, str] | None) -> StoreCheck:
    """Every file under ``uri``, referenced or not: Parquet files decoded (``user_id``,
    ``subject`` and ``event_id`` columns), every other file (the Delta log, checkpoints)
    byte by byte for the raw ids and event ids.

    A data file's distinct ids (and its event ids' hashes) are kept after its first
    read; a file that may hold one of the users is read again to count its rows. A file
    removed between the listing and its read (a concurrent erasure or compaction) holds
    nothing any more.
    """
    distinct = _DistinctIds()
    log_tokens = _DistinctIds()
    local = "://" not in uri

    def check(users: Sequence[Subject]) -> CheckResult:
        import duckdb
        import pyarrow.fs as pafs
        from deltalake.fs import DeltaStorageHandler

        if local and not Path(uri).exists():
            # Never written: it holds nothing of anyone.
            return "the directory does not exist", {u.user_id: (0, {}) for u in users}
        fs = pafs.PyFileSystem(DeltaStorageHandler(uri, dict(storage_options or {}) or None))

        def read(path: str) -> bytes:
            if local:
                return (Path(uri) / path).read_bytes()
            with fs.open_input_file(path) as f:
                return bytes(f.read())

        hits: dict[str, dict[str, int]] = {}
        with duckdb.connect() as con:
            scan = _ArchivePass(fs, users, con)
            for path, size in _files_under(fs) if not local else _local_files(uri):
                try:
                    if path.endswith(".parquet") and not path.startswith("_delta_log"):
                        if scan.may_hold(distinct.get(path, size, partial(scan.ids_of, path))):
                            hits[path] = scan.rows_of(path)
                    elif _IMMUTABLE_LOG.search(path):
                        # A commit or checkpoint never changes: known by its tokens after
                        # its first read, read again only if one of the ids may be there.
                        known = log_tokens.get(path, size, partial(_tokens_of, read, path))
                        if scan.needles.may_be_in(known):
                            hits[path] = scan.needles.count(read(path))
                    else:
                        hits[path] = scan.needles.count(read(path))
                except FileNotFoundError:
                    continue  # removed since the listing: gone, with whatever it held
                except OSError as exc:
                    if "not found" not in str(exc).lower():
                        raise
        method = (
            "every Parquet file decoded (user_id, subject, event_id), every log and "
            "checkpoint file searched byte by byte for the user ids and event ids"
        )
        return method, per_user(users, hits)

    return check


#: Keys read per round trip by the Redis scan.
_REDIS_BATCH = 500


#: How each type of key is read whole (a type headwater never writes, or a key gone
#: since the scan, is read as nothing).
_REDIS_READ: dict[str, Callable[[Any, bytes], Any]] = {
    "string": lambda pipe, key: pipe.get(key),
    "hash": lambda pipe, key: pipe.hgetall(key),
    "set": lambda pipe, key: pipe.smembers(key),
    "zset": lambda pipe, key: pipe.zrange(key, 0, -1),
    "list": lambda pipe, key: pipe.lrange(key, 0, -1),
    "none": lambda pipe, key: pipe.exists(key),
}


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict):
        return b"\n".join(b"%s\n%s" % (k, v) for k, v in value.items())
    if isinstance(value, list | set):
        return b"\n".join(v for v in value if isinstance(v, bytes))
    return b""


def _redis_values(client: Any, keys: Sequence[bytes]) -> list[bytes]:
    """Every key's value as bytes: a string whole, the members, fields and values of a
    hash, set, sorted set or list (two pipelined round trips for a batch of keys)."""
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.type(key)
        types = pipe.execute()
    with client.pipeline(transaction=False) as pipe:
        for key, kind in zip(keys, types, strict=True):
            name = kind.decode() if isinstance(kind, bytes) else str(kind)
            _REDIS_READ.get(name, _REDIS_READ["none"])(pipe, key)
        return [_as_bytes(v) for v in pipe.execute()]


def redis_scan(client: Any, prefix: str, *, cluster: bool = False) -> StoreCheck:
    """One ``SCAN`` over the deployment's keys, each key's name and value searched: a key
    holds a user if one of its ``:``-separated parts, or all that follows its namespace,
    is the raw id or one of the user's event ids (an idempotency entry is keyed by its
    event), or if its value holds one of them as a whole token (an idempotency entry
    names its user in its value). On a Redis Cluster every master is scanned, and
    a key's hash tag (``{prefix:p3}:user:u1``) is read as its prefix (``prefix:user:u1``)."""
    patterns = [f"{prefix}:*", f"{{{prefix}:*"] if cluster else [f"{prefix}:*"]

    def stored_keys() -> Iterator[bytes]:
        for pattern in patterns:
            if cluster:
                for node in client.get_primaries():
                    yield from client.scan_iter(match=pattern, count=1000, target_nodes=node)
            else:
                yield from client.scan_iter(match=pattern, count=1000)

    def check(users: Sequence[Subject]) -> CheckResult:
        owner = owners(users)
        wanted = set(owner)
        needles = Needles(wanted)
        found: dict[str, list[str]] = {u.user_id: [] for u in users}
        scanned = 0

        def search(batch: list[bytes]) -> None:
            for raw, value in zip(batch, _redis_values(client, batch), strict=True):
                stored = raw.decode(errors="replace")
                key = stored
                if key.startswith("{") and "}" in key:
                    key = prefix + key[key.index("}") + 1 :]
                parts = key.split(":")
                named = {*parts, key.split(":", 2)[-1]} & wanted
                held = {u for u, n in needles.count(value).items() if n} if value else set()
                for user in {owner[v] for v in named | held}:
                    found[user].append(stored)

        batch: list[bytes] = []
        for raw in stored_keys():
            batch.append(raw)
            scanned += 1
            if len(batch) >= _REDIS_BATCH:
                search(batch)
                batch = []
        if batch:
            search(batch)
        where = "on every master " if cluster else ""
        method = f"SCAN {where}over every key {' and '.join(patterns)} ({scanned} keys)"
        return (
            f"{method}, each name and value searched",
            {u: (len(keys), {"keys": keys[:20]}) for u, keys in found.items()},
        )

    return check

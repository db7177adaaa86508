"""SQLite connections as every embedded store opens them, and the scrub after an erasure.

Every file headwater keeps in SQLite may hold a user's data, so every connection sets
``secure_delete`` itself (whatever the library was compiled with): a deleted row's bytes,
and the free space of its page, are overwritten with zeros instead of staying on disk.
The old page images still sit in the write-ahead log until a checkpoint copies the new
ones back; :func:`scrub` checkpoints and truncates the log. A page SQLite rebuilt can
still hold an earlier copy of a cell in its free space: :func:`scrub_for_erasure`, given
what was erased, finds it and rebuilds the file (``tests/erasure/test_sqlite_pages.py``;
``tests/erasure/test_bytes.py`` scans every file after an erasure).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Collection
from contextlib import AbstractContextManager
from pathlib import Path

from headwater._idsearch import sqlite_copies

__all__ = ["ScrubIncompleteError", "connect", "database_file", "scrub", "scrub_for_erasure"]

#: How long :func:`scrub` waits for readers that still use the write-ahead log.
SCRUB_WAIT_S = 30.0


class ScrubIncompleteError(sqlite3.OperationalError):
    """The write-ahead log could not be emptied: readers held it past the wait."""


def connect(
    path: str, *, synchronous: str = "NORMAL", busy_ms: int = 60_000, page_size: int | None = None
) -> sqlite3.Connection:
    """A connection in autocommit mode with WAL, ``secure_delete`` and a busy timeout.

    ``page_size`` applies to a database this call creates; an existing one keeps its own
    (a WAL database cannot change it)."""
    conn = sqlite3.connect(
        path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False
    )
    try:
        if page_size is not None:
            conn.execute(f"PRAGMA page_size={int(page_size)}")  # before WAL writes the header
        _enter_wal(conn, busy_ms / 1000)
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute(f"PRAGMA busy_timeout={busy_ms}")
        conn.execute("PRAGMA secure_delete=ON")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _enter_wal(conn: sqlite3.Connection, wait_s: float) -> None:
    """Switch to WAL, retrying while other processes hold the file.

    SQLite answers ``database is locked`` at once, without calling the busy handler, when
    two connections open a new file together and race to change its journal mode (the
    handler would deadlock them); the loser retries until the winner is done.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
        else:
            return


def scrub(conn: sqlite3.Connection, *, wait_s: float = SCRUB_WAIT_S) -> int:
    """Copy the write-ahead log into the main file and truncate it to zero bytes.

    Returns the size in bytes the log had. Readers of other connections pin the log while
    they read; the checkpoint is retried until they let go, and
    :class:`ScrubIncompleteError` is raised if they hold it past ``wait_s``.
    """
    wal = f"{database_file(conn)}-wal"
    size = os.path.getsize(wal) if os.path.exists(wal) else 0
    (busy_ms,) = conn.execute("PRAGMA busy_timeout").fetchone()
    deadline = time.monotonic() + wait_s
    try:
        # The checkpoint itself waits on the busy handler: keep each attempt short.
        conn.execute("PRAGMA busy_timeout=100")
        while True:
            (busy, _log, _done) = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy == 0:
                return size
            if time.monotonic() >= deadline:
                raise ScrubIncompleteError(
                    f"the write-ahead log of {database_file(conn)} is still in use after "
                    f"{wait_s:.0f}s; the erased rows' old page images remain in it"
                )
            time.sleep(0.05)
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")


#: Above this many ids erased since the last scrub, the scrub rebuilds the file without
#: searching it first.
ERASED_IDS_SEARCHED = 100_000


def scrub_for_erasure(
    conn: sqlite3.Connection,
    lock: AbstractContextManager[object],
    fail: type[Exception],
    what: str,
    *,
    erased: Collection[str] = (),
    rebuild: bool = False,
    deleted: bool = False,
) -> dict[str, object]:
    """:func:`scrub` under the store's ``lock``, its errors as ``fail``, described for an
    erasure's evidence; then, if the file still holds one of ``erased`` (the ids of what
    the erasure deleted), or ``rebuild`` is asked (the independent verification found the
    user after the store confirmed), or ``deleted`` says rows whose values identify the
    user were deleted (a feature row: its items, its order id), ``VACUUM`` and scrub
    again.

    ``secure_delete`` zeroes a deleted cell where it is, but when SQLite rebuilds a page
    (moving cells between pages as they fill and empty) it leaves the cells' earlier
    bytes in the page's unused space, and a row deleted later leaves that old copy
    behind. ``VACUUM`` writes the file anew from its live rows. The search is the
    erasure verification's (each hit placed in its page's records), so a store that
    would fail the verification rebuilds itself first. It looks for ids: an old copy
    whose start (the key) was overwritten and whose rest holds the user's other values
    (the items of a feature row) is found by no id, hence ``deleted``.
    """
    with lock:
        try:
            evidence: dict[str, object] = {
                "secure_delete": True,
                "wal_truncated": True,
                "wal_bytes_truncated": scrub(conn),
            }
            if erased or rebuild or deleted:
                evidence.update(_rebuild_if_held(conn, erased, refused=rebuild, deleted=deleted))
        except sqlite3.Error as exc:
            raise fail(f"{what}: {exc}") from exc
    return evidence


def _rebuild_if_held(
    conn: sqlite3.Connection, erased: Collection[str], *, refused: bool, deleted: bool
) -> dict[str, object]:
    path = Path(database_file(conn))
    searched = bool(erased) and len(erased) <= ERASED_IDS_SEARCHED
    found = sqlite_copies(path, erased) if searched else None
    if found == 0 and not (refused or deleted):
        return {"old_copies": 0}
    conn.execute("VACUUM")
    scrub(conn)
    return {
        "old_copies": found,
        "vacuumed": True,
        **({"rebuilt_after_refusal": True} if refused else {}),
        **({"rebuilt_after_delete": True} if deleted else {}),
        "copies_after_vacuum": sqlite_copies(path, erased) if searched else None,
    }


def database_file(conn: sqlite3.Connection) -> str:
    """The main file of ``conn`` (for messages)."""
    for _seq, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return os.fspath(file) or ":memory:"
    return "?"

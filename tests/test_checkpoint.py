"""The write-ahead log checkpointed from a thread of its own (``headwater._checkpoint``)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import headwater._checkpoint
from headwater._checkpoint import WalCheckpointer, pending_frames
from headwater._sqlite import connect
from headwater.online.sqlite import WAL_CHECKPOINT_BYTES, SqliteOnlineStore


def _writer(path: Path) -> sqlite3.Connection:
    conn = connect(str(path))
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB)")
    return conn


#: The writer's lock, held over each of its transactions.
LOCK = threading.RLock()


def _commit(
    conn: sqlite3.Connection,
    first: int,
    rows: int = 50,
    checkpointer: WalCheckpointer | None = None,
) -> None:
    with LOCK:
        if checkpointer is not None:
            checkpointer.before_write()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT OR REPLACE INTO t VALUES (?, ?)",
            [(k, os.urandom(200)) for k in range(first, first + rows)],
        )
        conn.execute("COMMIT")


def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_the_frames_not_yet_copied_are_those_sqlite_counts(tmp_path: Path) -> None:
    path = tmp_path / "db"
    conn = _writer(path)
    for n in range(5):
        _commit(conn, n * 50)
    other = sqlite3.connect(path, isolation_level=None)
    pending = pending_frames(str(path))
    # A checkpoint reports the frames in the log and those it copied: all of them here.
    (busy, in_log, copied) = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert (busy, copied) == (0, in_log)
    assert pending == in_log > 0
    assert pending_frames(str(path)) == 0
    # The next commits start the log over: only their frames are pending.
    _commit(conn, 1_000)
    _commit(conn, 2_000)
    pending = pending_frames(str(path))
    assert pending == other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1] > 0
    other.close()
    conn.close()


def test_a_file_without_a_wal_index_has_no_frames_pending(tmp_path: Path) -> None:
    assert pending_frames(str(tmp_path / "none.db")) is None


def test_the_thread_checkpoints_past_the_threshold_and_the_writer_no_longer_does(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    conn = _writer(path)
    conn.execute("PRAGMA wal_autocheckpoint=1000")
    checkpointer = WalCheckpointer(
        str(path), conn, LOCK, threshold_bytes=256 * 1024, interval_s=0.01
    )
    assert not checkpointer.running
    _commit(conn, 0, rows=20, checkpointer=checkpointer)  # a few pages: below the threshold
    assert checkpointer.running
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    time.sleep(0.2)
    assert checkpointer.checkpoints == 0
    assert (pending_frames(str(path)) or 0) > 0
    _commit(conn, 100, rows=2_000, checkpointer=checkpointer)  # ~100 pages of 4 KiB: past it
    assert _within(5, lambda: pending_frames(str(path)) == 0)
    assert checkpointer.checkpoints >= 1
    # The lock was free: the thread finished its checkpoint itself.
    assert _within(5, lambda: checkpointer.finished == 1)
    checkpointer.before_write()
    assert checkpointer.finished_by_writer == 0
    checkpointer.close()
    assert not checkpointer.running
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)  # given back
    checkpointer.close()  # twice is fine
    conn.close()


def test_the_writer_finishes_a_checkpoint_its_lock_kept_the_thread_from(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    conn = _writer(path)
    checkpointer = WalCheckpointer(
        str(path), conn, LOCK, threshold_bytes=64 * 1024, interval_s=0.01
    )
    _commit(conn, 0, rows=20, checkpointer=checkpointer)  # starts the thread
    with LOCK:  # the writer between two transactions, but holding its lock
        _commit(conn, 100, rows=2_000)
        assert _within(5, lambda: checkpointer.checkpoints == 1)
        time.sleep(0.05)
        assert checkpointer.finished == 0  # it could not take the lock
        checkpointer.before_write()
        assert checkpointer.finished_by_writer == 1
        assert pending_frames(str(path)) == 0
    checkpointer.close()
    conn.close()


def test_a_writer_and_the_checkpoints_beside_it_keep_every_row(tmp_path: Path) -> None:
    path = tmp_path / "db"
    conn = _writer(path)
    checkpointer = WalCheckpointer(
        str(path), conn, LOCK, threshold_bytes=64 * 1024, interval_s=0.001
    )
    reader = sqlite3.connect(path, isolation_level=None)
    for n in range(200):
        _commit(conn, n * 10, rows=30, checkpointer=checkpointer)  # overlapping the next
        assert reader.execute("SELECT COUNT(*) FROM t").fetchone() == (n * 10 + 30,)
    checkpointer.close()
    assert checkpointer.checkpoints > 1
    assert reader.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    reader.close()
    conn.close()
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM t").fetchone() == (1_990 + 30,)


def test_the_online_stores_commits_leave_the_log_to_its_checkpointer(tmp_path: Path) -> None:
    """A batch's commit appends to the log whatever its length; the store's thread
    copies it back once it passes the mark."""
    path = tmp_path / "online.db"
    store = SqliteOnlineStore(f"sqlite:///{path}")
    checkpointer = store._checkpointer
    assert checkpointer is not None
    assert not checkpointer.running  # a store that only reads never starts it
    checkpointer.threshold_bytes = 256 * 1024
    checkpointer.interval_s = 3_600.0  # not looking yet
    rows = {f"u{n:05d}": os.urandom(300) for n in range(6_000)}
    store.put("user", rows)
    assert checkpointer.running
    pending = pending_frames(str(path))
    assert pending is not None
    assert pending * 4_096 > 4 * checkpointer.threshold_bytes
    checkpointer.close()  # the thread stops and the store's connection checkpoints again
    autocheckpoint = store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    assert autocheckpoint == WAL_CHECKPOINT_BYTES // 4_096
    store.put("user", {"u00000": b"x"})
    assert store.get("user", ["u00000", "u05999"]) == {"u00000": b"x", "u05999": rows["u05999"]}
    store.close()


def test_the_online_stores_thread_copies_the_log_back(tmp_path: Path) -> None:
    path = tmp_path / "online.db"
    store = SqliteOnlineStore(f"sqlite:///{path}")
    assert store._checkpointer is not None
    store._checkpointer.threshold_bytes = 256 * 1024
    store._checkpointer.interval_s = 0.01
    checkpointer = store._checkpointer
    for n in range(5):
        store.put("user", {f"u{n}-{i:04d}": os.urandom(300) for i in range(500)})
    # Copied back but for less than the threshold (what came after the last look).
    assert _within(5, lambda: (pending_frames(str(path)) or 0) * 4_096 < 256 * 1024)
    assert checkpointer.checkpoints >= 1
    assert len(store.keys("user")) == 2_500
    store.close()
    assert not store._checkpointer.running


def test_the_log_starts_over_while_the_writer_writes_without_a_pause(tmp_path: Path) -> None:
    """A checkpoint beside a writer that never pauses never finds the log complete: the
    writer's finishing it before its next transaction is what lets the log start over."""
    path = tmp_path / "db"
    conn = _writer(path)
    checkpointer = WalCheckpointer(str(path), conn, LOCK, threshold_bytes=256 * 1024)
    checkpointer.interval_s = 0.001
    largest = 0
    for n in range(800):
        # ~12 pages a commit, rewriting earlier ones
        _commit(conn, (n * 37) % 5_000, rows=200, checkpointer=checkpointer)
        largest = max(largest, os.path.getsize(f"{path}-wal"))
    checkpointer.close()
    assert checkpointer.checkpoints > 2
    # The threshold and what the writer adds while a checkpoint runs, not the ~40 MB
    # of all 800 commits.
    assert largest < 10 * 1024 * 1024
    conn.close()


def test_the_writer_checkpoints_again_should_the_thread_die(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "db"
    conn = _writer(path)
    conn.execute("PRAGMA wal_autocheckpoint=1000")
    checkpointer = WalCheckpointer(str(path), conn, LOCK, threshold_bytes=64 * 1024)
    checkpointer.interval_s = 0.01
    _commit(conn, 0, checkpointer=checkpointer)
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)

    def broken(database: str) -> int:
        raise RuntimeError("not an error the thread expects")

    monkeypatch.setattr(headwater._checkpoint, "pending_frames", broken)
    assert _within(5, lambda: not checkpointer.running)
    _commit(conn, 100, checkpointer=checkpointer)
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
    checkpointer.close()
    conn.close()

"""The write-ahead log checkpointed from a thread of its own (``headwater._checkpoint``)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from headwater._checkpoint import FRAMES_PER_ROW, WalCheckpointer
from headwater._idsearch import sqlite_copies
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
        if checkpointer is not None:
            checkpointer.committed(rows)


def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _frames_in_log(path: Path) -> int:
    """The frames in ``path``'s log, as a checkpoint of another connection counts them
    (after copying them: call it once the thread is stopped)."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        (busy, in_log, copied) = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert (busy, copied) == (0, in_log)
        return int(in_log)
    finally:
        other.close()


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
    # 2,000 rows, at one frame a row until a checkpoint measures it: past the threshold
    # (64 frames of 4 KiB), though they fill about 100.
    _commit(conn, 100, rows=2_000, checkpointer=checkpointer)
    assert _within(5, lambda: checkpointer.checkpoints == 1)
    # The lock was free: the thread finished its checkpoint itself.
    assert _within(5, lambda: checkpointer.finished == 1)
    # The checkpoint found ~120 frames for 2,020 rows: the estimate halves (at most).
    assert checkpointer.frames_per_row == FRAMES_PER_ROW / 2
    assert checkpointer.pending_frames == 0
    checkpointer.before_write()
    assert checkpointer.finished_by_writer == 0
    _commit(conn, 5_000, rows=10, checkpointer=checkpointer)
    checkpointer.close()
    assert not checkpointer.running
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)  # given back
    checkpointer.close()  # twice is fine
    # The log started over: it holds the last commit's frames, not the 2,000 rows'.
    assert _frames_in_log(path) < 10
    conn.close()


def test_the_writer_finishes_a_checkpoint_its_lock_kept_the_thread_from(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    conn = _writer(path)
    checkpointer = WalCheckpointer(
        str(path), conn, LOCK, threshold_bytes=64 * 1024, interval_s=0.01
    )
    _commit(conn, 0, rows=5, checkpointer=checkpointer)  # starts the thread
    with LOCK:  # the writer between two transactions, but holding its lock
        _commit(conn, 100, rows=2_000, checkpointer=checkpointer)
        assert _within(5, lambda: checkpointer.checkpoints == 1)
        time.sleep(0.05)
        assert checkpointer.finished == 0  # it could not take the lock
        checkpointer.before_write()
        assert checkpointer.finished_by_writer == 1
        _commit(conn, 5_000, rows=10)
    checkpointer.close()
    assert _frames_in_log(path) < 10  # started over
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
    assert checkpointer.rows == 6_000
    assert os.path.getsize(f"{path}-wal") > 4 * checkpointer.threshold_bytes
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
    assert _within(5, lambda: checkpointer.checkpoints >= 1)
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

    def broken(conn: sqlite3.Connection) -> None:
        raise RuntimeError("not an error the thread expects")

    monkeypatch.setattr(checkpointer, "_look", broken)
    assert _within(5, lambda: not checkpointer.running)
    _commit(conn, 100, checkpointer=checkpointer)
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
    checkpointer.close()
    conn.close()


#: Run in another process: exits 0 if the database's write lock is held by someone else.
_TRY_TO_WRITE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
try:
    conn.execute("BEGIN IMMEDIATE")
except sqlite3.OperationalError as exc:
    print(exc)
    sys.exit(0)
print("another process began a write transaction")
sys.exit(1)
"""


def test_the_writer_keeps_its_write_lock_while_the_thread_looks(tmp_path: Path) -> None:
    """The thread's looks and checkpoints leave every lock of the writer's in place: a
    process that closes a descriptor of a file loses its POSIX locks on it, so reading
    SQLite's files through descriptors of one's own would let another process write
    beside the writer (two feature processes, rows overwritten)."""
    path = tmp_path / "db"
    conn = _writer(path)
    checkpointer = WalCheckpointer(str(path), conn, LOCK, threshold_bytes=4_096, interval_s=0.001)
    _commit(conn, 0, rows=20, checkpointer=checkpointer)
    assert _within(5, lambda: checkpointer.checkpoints >= 1)
    with LOCK:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (-1, x'00')")
        for _ in range(3):  # rows come due while the transaction is open: the thread looks
            seen = checkpointer.checkpoints
            checkpointer.committed(100)
            assert _within(5, lambda seen=seen: checkpointer.checkpoints > seen)
        other = subprocess.run(
            [sys.executable, "-c", _TRY_TO_WRITE, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        conn.execute("COMMIT")
    checkpointer.close()
    conn.close()
    assert other.returncode == 0, other.stdout + other.stderr
    assert "locked" in other.stdout


def test_an_erasures_scrub_empties_the_log_while_the_thread_checkpoints(tmp_path: Path) -> None:
    """The scrub's truncating checkpoint meets the thread's passive ones (SQLite answers
    it busy while one runs) and retries until the log is empty, its rows kept."""
    path = tmp_path / "online.db"
    store = SqliteOnlineStore(f"sqlite:///{path}")
    checkpointer = store._checkpointer
    assert checkpointer is not None
    checkpointer.threshold_bytes = 16 * 4_096
    checkpointer.interval_s = 0.001
    stop = threading.Event()
    written: list[int] = []

    def write() -> None:
        n = 0
        while not stop.is_set():
            store.put("user", {f"u{(n * 50 + i) % 3_000:05d}": os.urandom(300) for i in range(50)})
            n += 1
        written.append(n)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for round_ in range(10):
            assert _within(5, lambda done=round_: checkpointer.checkpoints > done)
            store.put("user", {"erased-user": b"items"})
            assert store.delete("user", ["erased-user"]) == 1
            with store._lock:  # no write between the scrub and the look at the log
                evidence = store.scrub(["erased-user"])
                assert evidence["wal_truncated"] is True
                assert evidence["vacuumed"] is True  # a row was deleted
                # Only the rebuild's own bookkeeping was written since the truncation.
                assert os.path.getsize(f"{path}-wal") <= 32 + 2 * (24 + 4_096)
                assert sqlite_copies(path, ["erased-user"]) == 0
    finally:
        stop.set()
        writer.join()
    assert written[0] > 10
    assert checkpointer.checkpoints >= 10
    assert len(store.keys("user")) == min(3_000, written[0] * 50)
    assert store.get("user", ["erased-user"]) == {}
    assert store._query("PRAGMA integrity_check") == [("ok",)]
    store.close()


class _Log:
    """A connection whose checkpoints report ``in_log`` frames, all copied."""

    def __init__(self) -> None:
        self.in_log = 0
        self.checkpoints = 0

    def execute(self, sql: str) -> _Log:
        assert sql == "PRAGMA wal_checkpoint(PASSIVE)"
        self.checkpoints += 1
        return self

    def fetchone(self) -> tuple[int, int, int]:
        return (0, self.in_log, self.in_log)


def test_the_frames_a_row_adds_are_measured_at_each_checkpoint(tmp_path: Path) -> None:
    """A checkpoint is due when the rows since the last, at the frames a row added last
    time, fill the threshold; a higher figure is taken at once, a lower one halves the
    estimate at most (a bulk load packs pages, the stream after it writes a page a row)."""
    conn = _writer(tmp_path / "db")
    checkpointer = WalCheckpointer(str(tmp_path / "db"), conn, LOCK, threshold_bytes=100 * 4_096)
    log = _Log()
    look = checkpointer._look
    checkpointer.committed(99)
    look(log)
    assert log.checkpoints == 0  # 99 rows at one frame a row: below 100 frames
    checkpointer.committed(50_000)
    log.in_log = 5_000  # a bulk load: ten rows a page
    look(log)
    # The checkpoint, then its second pass (the writer's lock was free).
    assert (log.checkpoints, checkpointer.checkpoints, checkpointer.finished) == (2, 1, 1)
    assert checkpointer.frames_per_row == 0.5
    assert checkpointer.pending_frames == 0
    checkpointer.committed(150)
    look(log)
    assert log.checkpoints == 2  # 75 frames estimated
    checkpointer.committed(50)
    log.in_log = 400  # updates of rows spread over the file: two frames a row
    look(log)
    assert checkpointer.frames_per_row == 2.0
    checkpointer.committed(60)
    log.in_log = 10**9  # another process's frames counted too: bounded
    look(log)
    assert checkpointer.frames_per_row == 16.0
    checkpointer.committed(7)
    look(log)
    assert checkpointer.checkpoints == 4  # 7 rows at 16 frames: past the threshold
    conn.close()


class _BusyWriter:
    """A writer's connection whose checkpoints fail while ``busy`` (another process's
    checkpoint holding SQLite's checkpoint lock)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.busy = False

    def execute(self, sql: str) -> sqlite3.Cursor:
        if self.busy and sql.startswith("PRAGMA wal_checkpoint"):
            raise sqlite3.OperationalError("database is locked")
        return self.conn.execute(sql)


def test_a_finishing_checkpoint_the_writer_cannot_run_waits_for_its_next_write(
    tmp_path: Path,
) -> None:
    conn = _writer(tmp_path / "db")
    writer = _BusyWriter(conn)
    checkpointer = WalCheckpointer(
        str(tmp_path / "db"),
        writer,
        LOCK,
        threshold_bytes=1 << 30,
        interval_s=3_600.0,
    )
    with LOCK:
        checkpointer.before_write()  # starts the thread
        checkpointer._owed.set()  # as after a checkpoint the thread could not finish
        writer.busy = True
        checkpointer.before_write()  # no error: the write goes ahead
        assert checkpointer.finished_by_writer == 0
        writer.busy = False
        checkpointer.before_write()
        assert checkpointer.finished_by_writer == 1
        checkpointer.before_write()
        assert checkpointer.finished_by_writer == 1  # nothing owed any more
    checkpointer.close()
    conn.close()

"""Copy a SQLite file's write-ahead log back into the file from a thread of its own.

SQLite checkpoints on the connection that commits: the commit that takes the log past
``wal_autocheckpoint`` pages returns only once those pages are copied into the file and
both files are synced. On the feature consumer's online store (a checkpoint every ~40 MB
of log, about one batch in eight of a live stream) that commit took 70-85 ms where the
others took 5-14, and every signal that arrived meanwhile waited for it.

A :class:`WalCheckpointer` takes that work off the writer's connection
(``wal_autocheckpoint=0``) in two passive checkpoints on a connection of its own, in a
thread. The first runs beside the writer: it copies the frames committed before it
began, without blocking the writer or a reader, and releases the GIL while SQLite works,
so on a second core it costs the writer nothing. It leaves the log incomplete, though
(the writer went on appending), and SQLite starts the log over only once a checkpoint
copied all of it: a log checkpointed that way alone grew to 850 MB in an experiment
where the writer's own checkpoints kept it at 43 MB. So the second runs between two of the
writer's transactions, holding the writer's lock (while the feature consumer computes
its next batch): it copies only the frames since the first (a commit or two), and the
writer's next transaction starts the log over. Where the thread cannot take the lock,
the writer finishes the job itself before that transaction (``before_write``).
``bench/bench_online_commits.py`` measures a batch's write with and without it
(BENCHMARKS.md, "The online store's checkpoints on a thread of their own").

How much of the log is not yet copied is read from the file's WAL index (the ``-shm``
file, whose header SQLite documents in "WAL-mode File Format"): ``mxFrame`` (the last
committed frame) less ``nBackfill`` (the frames already copied), in the machine's byte
order. A header read while a writer changes it is told by its two copies differing and
read again at the next look.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
import time

__all__ = ["WalCheckpointer", "pending_frames"]

log = logging.getLogger("headwater.sqlite")

#: The WAL index header: two copies of 48 bytes, then the checkpoint information whose
#: first field is ``nBackfill``.
_HEADER = 48
_MX_FRAME = struct.Struct("=I")  # at offset 16 of each copy
_N_BACKFILL = 96


def pending_frames(database: str) -> int | None:
    """The frames of ``database``'s write-ahead log not yet copied into the file, as its
    WAL index says; None while the index is being changed, or there is none."""
    try:
        fd = os.open(f"{database}-shm", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        head = os.pread(fd, _N_BACKFILL + 4, 0)
    finally:
        os.close(fd)
    if len(head) < _N_BACKFILL + 4 or head[:_HEADER] != head[_HEADER : 2 * _HEADER]:
        return None
    (mx_frame,) = _MX_FRAME.unpack_from(head, 16)
    (backfilled,) = _MX_FRAME.unpack_from(head, _N_BACKFILL)
    return max(0, int(mx_frame) - int(backfilled))


class WalCheckpointer:
    """Checkpoints ``database`` whenever its log holds ``threshold_bytes`` not yet
    copied, looking every ``interval_s``. ``writer`` is the connection that writes the
    file and ``lock`` the re-entrant lock it holds over each transaction. The writer
    calls ``before_write`` before each transaction (which takes the checkpoints off its
    connection the first time); ``close`` gives them back."""

    def __init__(
        self,
        database: str,
        writer: sqlite3.Connection,
        lock: threading.RLock,
        *,
        threshold_bytes: int,
        interval_s: float = 0.05,
    ) -> None:
        self.database = database
        self.threshold_bytes = threshold_bytes
        self.interval_s = interval_s
        self._writer = writer
        self._lock = lock
        (self._autocheckpoint,) = writer.execute("PRAGMA wal_autocheckpoint").fetchone()
        (self._page,) = writer.execute("PRAGMA page_size").fetchone()
        #: Checkpoints the thread ran beside the writer so far; those it finished
        #: between two of the writer's transactions, and those the writer finished.
        self.checkpoints = 0
        self.finished = 0
        self.finished_by_writer = 0
        #: Set by the thread after a checkpoint: the writer's next transaction starts
        #: by copying what was committed meanwhile.
        self._owed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    @property
    def running(self) -> bool:
        """Whether the thread is checkpointing (and the writer's commits are not)."""
        return self._thread is not None and self._thread.is_alive()

    def before_write(self) -> None:
        """Called by the writer, holding its lock, outside a transaction: the first
        call starts the thread (the writer's commits no longer checkpoint); a call
        after a checkpoint of the thread that the thread could not finish copies the
        rest of the log, so that the transaction that follows starts it over. After
        ``close`` it does nothing. Should the thread have died, the writer's commits
        checkpoint again, as before it started."""
        if self._thread is None:
            self._start()
        elif not self._thread.is_alive() and not self._stop.is_set():
            self._stop.set()
            self._writer.execute(f"PRAGMA wal_autocheckpoint={int(self._autocheckpoint)}")
            log.error("the checkpoint thread of %s stopped; its writer checkpoints", self.database)
        elif self._owed.is_set():
            self._owed.clear()
            self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.finished_by_writer += 1

    def _start(self) -> None:
        with self._guard:
            if self._thread is not None or self._stop.is_set():
                return
            conn = sqlite3.connect(
                self.database, timeout=1.0, isolation_level=None, check_same_thread=False
            )
            self._writer.execute("PRAGMA wal_autocheckpoint=0")
            self._thread = threading.Thread(
                target=self._run, args=(conn,), name="headwater-checkpoint", daemon=True
            )
            self._thread.start()

    def _run(self, conn: sqlite3.Connection) -> None:
        threshold = max(1, self.threshold_bytes // self._page)
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    frames = pending_frames(self.database)
                    if frames is not None and frames >= threshold:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        self.checkpoints += 1
                        self._owed.set()
                        self._finish(conn)
                except (sqlite3.Error, OSError) as exc:
                    # Busy with another checkpoint (an erasure's scrub, another process):
                    # the next look tries again.
                    log.debug("checkpoint of %s skipped: %s", self.database, exc)
        except Exception:
            # Anything else ends the thread; the writer's next transaction sees it gone
            # and checkpoints again itself (``before_write``).
            log.exception("the checkpoint thread of %s failed", self.database)
        finally:
            conn.close()

    def _finish(self, conn: sqlite3.Connection) -> None:
        """Copy what the writer committed during the first pass, between two of its
        transactions; left to the writer if its lock is not free within a look (or
        once ``close`` was called: the writer closing holds its lock)."""
        deadline = time.monotonic() + self.interval_s
        while not self._lock.acquire(timeout=0.01):
            if self._stop.is_set() or time.monotonic() >= deadline:
                return
        try:
            if self._owed.is_set() and not self._stop.is_set():
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self._owed.clear()
                self.finished += 1
        finally:
            self._lock.release()

    def close(self) -> None:
        """Stop the thread and give the checkpoints back to the writer's connection.
        Called by the writer, holding its own lock, before it closes its connection."""
        with self._guard:
            self._stop.set()
            thread = self._thread
        if thread is None:
            return
        thread.join()
        self._writer.execute(f"PRAGMA wal_autocheckpoint={int(self._autocheckpoint)}")

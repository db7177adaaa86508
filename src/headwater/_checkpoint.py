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

When to checkpoint is estimated from the rows the writer reports committed
(``committed``) and the frames per row the last checkpoint found in the log, never by
reading SQLite's files: a process that closes any descriptor of a file loses every
POSIX lock it holds on it, SQLite's own among them. An earlier version of this module
read the log's length from the WAL index (the ``-shm`` file) through a descriptor of its
own; closing it released the writer's WAL write lock, a second feature process wrote at
the same time, and the exactly-once history checker found counts lost
(``tests/test_checkpoint.py::test_the_writer_keeps_its_write_lock_while_the_thread_looks``
holds a transaction open across the thread's looks and has another process try to
write).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

__all__ = ["WalCheckpointer"]

log = logging.getLogger("headwater.sqlite")

#: The frames a row is assumed to add to the log before a checkpoint has measured it,
#: and the bounds of what a measurement may set (another process's frames, or a log
#: a reader kept from starting over, count towards a checkpoint's figure).
FRAMES_PER_ROW = 1.0
FRAMES_PER_ROW_BOUNDS = (1 / 64, 16.0)


class WalCheckpointer:
    """Checkpoints ``database`` whenever the rows its writer committed since the last
    checkpoint are estimated to fill ``threshold_bytes`` of log, looking every
    ``interval_s``. ``writer`` is the connection that writes the file and ``lock`` the
    re-entrant lock it holds over each transaction. The writer calls ``before_write``
    before each transaction (which takes the checkpoints off its connection the first
    time) and ``committed`` after each commit; ``close`` gives the checkpoints back."""

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
        #: Rows the writer committed, those committed when the last checkpoint began,
        #: and the frames of log a row adds, as the last checkpoint measured it.
        self.rows = 0
        self._rows_checkpointed = 0
        self.frames_per_row = FRAMES_PER_ROW
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

    @property
    def pending_frames(self) -> float:
        """The frames of log the rows committed since the last checkpoint are estimated
        to hold."""
        return (self.rows - self._rows_checkpointed) * self.frames_per_row

    def committed(self, rows: int) -> None:
        """Called by the writer after a commit of ``rows`` rows."""
        self.rows += rows

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
            try:
                self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                # Busy with another checkpoint: the next transaction tries again. The
                # write it precedes is not refused for it.
                log.debug("checkpoint of %s left to the next write: %s", self.database, exc)
                return
            self._owed.clear()
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
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    self._look(conn)
                except sqlite3.Error as exc:
                    # Busy with another checkpoint (an erasure's scrub, another process):
                    # the next look tries again.
                    log.debug("checkpoint of %s skipped: %s", self.database, exc)
        except Exception:
            # Anything else ends the thread; the writer's next transaction sees it gone
            # and checkpoints again itself (``before_write``).
            log.exception("the checkpoint thread of %s failed", self.database)
        finally:
            conn.close()

    def _look(self, conn: sqlite3.Connection) -> None:
        if self.pending_frames * self._page < self.threshold_bytes:
            return
        since, rows = self._rows_checkpointed, self.rows
        (_busy, in_log, _copied) = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        self._rows_checkpointed = rows
        if in_log > 0 and rows > since:
            # The log started over after the last checkpoint: what it holds now is what
            # the rows committed since added (and another writer's, if any). A figure
            # above the estimate is taken at once, one below it halves the estimate at
            # most: a bulk load packs a page with rows where a stream of updates writes a
            # page a row, and the stream that follows it would otherwise grow the log to
            # ten times the threshold before the next checkpoint.
            low, high = FRAMES_PER_ROW_BOUNDS
            measured = in_log / (rows - since)
            self.frames_per_row = min(high, max(low, measured, self.frames_per_row / 2))
        self._owed.set()
        self._finish(conn)

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

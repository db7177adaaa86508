"""The batch lock: one holder at a time across every host that shares the control plane.

A row in the control plane names the holder (host, pid, what it runs) and when its
lease ends. The holder renews the lease from a background thread while it works; a
host that crashed stops renewing, and once its lease has passed another host may take
the lock. A holder whose lease was taken over finds out at its next renewal or
:meth:`BatchLock.check`, and stops before it writes state (a fence, not a wait).

Leases are compared with each host's own clock: keep clocks within a small fraction
of the lease (NTP does).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import msgspec

from headwater._time import format_ms
from headwater.control.base import ControlDatabase
from headwater.errors import BatchRunningError

__all__ = ["SCHEMA", "BatchLock", "LockHolder"]

log = logging.getLogger("headwater.batch.lock")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hw_batch_lock (
        name TEXT PRIMARY KEY, holder TEXT NOT NULL, host TEXT NOT NULL, pid BIGINT NOT NULL,
        purpose TEXT NOT NULL, acquired_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL)""",
)

_COLUMNS = "holder, host, pid, purpose, acquired_ms, expires_ms"


class LockHolder(msgspec.Struct, frozen=True):
    """Who holds the batch lock, for what, since when and until when (unless renewed)."""

    holder: str
    host: str
    pid: int
    purpose: str
    acquired_at: str
    expires_at: str

    def describe(self) -> str:
        """One line for an operator."""
        return (
            f"held by {self.host} (pid {self.pid}, {self.purpose}) since {self.acquired_at}, "
            f"lease until {self.expires_at}"
        )


def _holder(row: tuple[object, ...]) -> LockHolder:
    return LockHolder(
        holder=str(row[0]),
        host=str(row[1]),
        pid=int(str(row[2])),
        purpose=str(row[3]),
        acquired_at=format_ms(int(str(row[4]))),
        expires_at=format_ms(int(str(row[5]))),
    )


class BatchLock:
    """The lock over batch runs and erasure recomputes, with a renewed lease."""

    def __init__(
        self,
        db: ControlDatabase,
        *,
        lease_s: float = 600.0,
        name: str = "batch",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.lease_s = lease_s
        self.name = name
        self.clock = clock
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:12]}"
        self.lost: LockHolder | None = None  # set when a renewal found another holder
        db.ensure_schema(SCHEMA)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def holder(self) -> LockHolder | None:
        """The current holder, if its lease has not passed."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM hw_batch_lock WHERE name = ? AND expires_ms > ?",
            (self.name, self._now_ms()),
        )
        return _holder(rows[0]) if rows else None

    def try_acquire(self, purpose: str) -> LockHolder | None:
        """Take the lock if it is free, expired or ours; None when taken, else the holder."""
        now = self._now_ms()
        with self.db.transaction() as tx:
            # One atomic upsert: the row changes hands only if its lease has passed.
            tx.execute(
                "INSERT INTO hw_batch_lock VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) "
                "DO UPDATE SET holder = excluded.holder, host = excluded.host, "
                "pid = excluded.pid, purpose = excluded.purpose, "
                "acquired_ms = excluded.acquired_ms, expires_ms = excluded.expires_ms "
                "WHERE hw_batch_lock.expires_ms <= ? OR hw_batch_lock.holder = ?",
                (
                    self.name,
                    self.id,
                    self.host,
                    self.pid,
                    purpose,
                    now,
                    now + int(self.lease_s * 1000),
                    now,
                    self.id,
                ),
            )
            rows = tx.execute(f"SELECT {_COLUMNS} FROM hw_batch_lock WHERE name = ?", (self.name,))
        current = _holder(rows[0])
        if current.holder == self.id:
            self.lost = None
            return None
        return current

    def renew(self) -> bool:
        """Extend the lease; False (and ``lost`` set) when another holder has it now."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE hw_batch_lock SET expires_ms = ? WHERE name = ? AND holder = ?",
                (self._now_ms() + int(self.lease_s * 1000), self.name, self.id),
            )
            rows = tx.execute(f"SELECT {_COLUMNS} FROM hw_batch_lock WHERE name = ?", (self.name,))
        if rows and str(rows[0][0]) == self.id:
            return True
        self.lost = _holder(rows[0]) if rows else LockHolder("", "nobody", 0, "", "", "")
        return False

    def check(self) -> None:
        """Raise ``BatchRunningError`` if the lease was taken over (fence before a write)."""
        if self.lost is not None or not self.renew():
            assert self.lost is not None
            raise BatchRunningError(
                f"this process lost the batch lock (its lease passed); now {self.lost.describe()}"
            )

    def release(self) -> None:
        """Give the lock up (only if it is still ours)."""
        self.db.execute(
            "DELETE FROM hw_batch_lock WHERE name = ? AND holder = ?", (self.name, self.id)
        )

    @contextmanager
    def held(
        self,
        purpose: str,
        *,
        wait_s: float = 0.0,
        poll_s: float = 1.0,
        stop: threading.Event | None = None,
    ) -> Iterator[None]:
        """Hold the lock for the block, renewing the lease; ``BatchRunningError`` when
        another process holds it for longer than ``wait_s`` (or ``stop`` is set first)."""
        deadline = time.monotonic() + wait_s
        stop = stop or threading.Event()
        while True:
            other = self.try_acquire(purpose)
            if other is None:
                break
            if time.monotonic() >= deadline or stop.is_set():
                raise BatchRunningError(f"the batch is already running: {other.describe()}")
            stop.wait(min(poll_s, max(0.01, deadline - time.monotonic())))
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name="batch-lock", daemon=True)
        self._renewer.start()
        try:
            yield
        finally:
            self._stop.set()
            self._renewer.join()
            self._renewer = None
            self.release()

    def _renew_loop(self) -> None:
        while not self._stop.wait(max(0.05, self.lease_s / 3)):
            try:
                if not self.renew():
                    log.error("the batch lock was taken over: %s", self.lost)
                    return
            except Exception:  # a blip of the control plane: retry at the next beat
                log.exception("renewing the batch lock failed")

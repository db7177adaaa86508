"""The scheduled batch inside ``headwater up``: nightly by default, configurable.

A schedule is ``HH:MM`` (every day at that UTC time), ``every <duration>`` (e.g.
``every 6h``) or ``off``. A failed run is logged and retried at the next slot; a stop
interrupts the wait, never a run in progress (the run holds the batch lock and ends
in a consistent state, or the next run redoes its days).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from headwater._duration import parse_duration
from headwater.errors import ConfigurationError

__all__ = ["BatchScheduler", "next_run"]

log = logging.getLogger("headwater.batch.scheduler")

_DAILY = re.compile(r"^(\d{1,2}):(\d{2})$")


def next_run(schedule: str, after: datetime) -> datetime | None:
    """The first scheduled time strictly after ``after`` (None when the schedule is off)."""
    text = schedule.strip().lower()
    if text in ("off", "never", "none", ""):
        return None
    if text.startswith("every "):
        return after + timedelta(seconds=parse_duration(text[6:], "batch schedule"))
    m = _DAILY.match(text)
    if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ConfigurationError(
            f"batch schedule {schedule!r}: use HH:MM (UTC), 'every 6h' or 'off'"
        )
    at = after.astimezone(UTC).replace(
        hour=int(m.group(1)), minute=int(m.group(2)), second=0, microsecond=0
    )
    return at if at > after else at + timedelta(days=1)


class BatchScheduler:
    """Runs ``job`` on a schedule in a background thread until stopped."""

    def __init__(
        self,
        job: Callable[[], object],
        schedule: str,
        *,
        clock: Callable[[], datetime] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        next_run(schedule, datetime.now(UTC))  # fail at start on a bad schedule
        self.job = job
        self.schedule = schedule
        self.clock = clock or (lambda: datetime.now(UTC))
        self.on_close = on_close
        self.runs = 0
        self.failures = 0
        self.last_error = ""
        self.next_at: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start waiting for the first slot (no-op when the schedule is off)."""
        if next_run(self.schedule, self.clock()) is None:
            log.info("batch schedule is off")
            return
        self._thread = threading.Thread(target=self._loop, name="batch-scheduler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.next_at = next_run(self.schedule, self.clock())
            if self.next_at is None:
                return
            wait = (self.next_at - self.clock()).total_seconds()
            if self._stop.wait(max(0.0, wait)):
                return
            self.run_once()

    def run_once(self) -> None:
        """Run the job now; a failure is logged and counted, not raised."""
        try:
            self.job()
            self.runs += 1
        except Exception as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("scheduled batch run failed")

    @property
    def stopping(self) -> threading.Event:
        """Set once ``stop`` is called: a job waiting for something gives up on it."""
        return self._stop

    def stop(self, timeout: float | None = None) -> None:
        """Stop waiting; a run in progress finishes first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.on_close is not None:
            self.on_close()
            self.on_close = None

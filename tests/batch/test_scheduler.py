"""The batch schedule: nightly at a UTC time, every N, or off."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from headwater.batch import BatchScheduler, next_run
from headwater.errors import ConfigurationError


def test_daily_schedule_is_the_next_utc_slot() -> None:
    at = datetime(2026, 3, 5, 1, 0, tzinfo=UTC)
    assert next_run("02:30", at) == datetime(2026, 3, 5, 2, 30, tzinfo=UTC)
    assert next_run("02:30", at.replace(hour=2, minute=30)) == datetime(
        2026, 3, 6, 2, 30, tzinfo=UTC
    )
    assert next_run("every 6h", at) == at + timedelta(hours=6)
    assert next_run("off", at) is None


@pytest.mark.parametrize("bad", ["25:00", "2pm", "every soon"])
def test_bad_schedules_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        BatchScheduler(lambda: None, bad)


def test_scheduler_runs_until_stopped_and_survives_failures() -> None:
    calls: list[float] = []

    def job() -> None:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise RuntimeError("archive unreachable")

    closed: list[bool] = []
    scheduler = BatchScheduler(job, "every 0.02s", on_close=lambda: closed.append(True))
    scheduler.start()
    deadline = time.monotonic() + 5
    while len(calls) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    scheduler.stop(5)
    assert len(calls) >= 4
    assert scheduler.failures == 1
    assert "archive unreachable" in scheduler.last_error
    assert scheduler.runs == len(calls) - 1
    assert closed == [True]


def test_off_schedule_starts_nothing() -> None:
    scheduler = BatchScheduler(lambda: None, "off")
    scheduler.start()
    scheduler.stop(1)
    assert scheduler.runs == 0

"""The batch lock in the control plane (SQLite and PostgreSQL): one holder, a lease that
outlives a crashed holder only so long, and a fence for a holder whose lease passed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from headwater.batch.lock import BatchLock
from headwater.batch.state import BatchState, ComputedDay
from headwater.control import ControlDatabase, open_control_database
from headwater.errors import BatchRunningError


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dbs(control_url: str) -> Iterator[tuple[ControlDatabase, ControlDatabase]]:
    # Two connections: two processes (or hosts) sharing one control plane.
    a, b = open_control_database(control_url), open_control_database(control_url)
    yield a, b
    a.close()
    b.close()


def test_one_holder_at_a_time_and_the_other_is_told_who(
    dbs: tuple[ControlDatabase, ControlDatabase],
) -> None:
    clock = Clock()
    a = BatchLock(dbs[0], lease_s=60, clock=clock)
    b = BatchLock(dbs[1], lease_s=60, clock=clock)
    assert a.try_acquire("nightly run") is None
    held = b.try_acquire("erasure recompute")
    assert held is not None
    assert (held.holder, held.host, held.pid, held.purpose) == (a.id, a.host, a.pid, "nightly run")
    assert held.acquired_at == "2027-01-15T08:00:00.000Z"
    assert held.expires_at == "2027-01-15T08:01:00.000Z"
    assert "held by" in held.describe()
    assert "since 2027-01-15T08:00:00.000Z" in held.describe()
    assert b.holder() == held
    a.release()
    assert b.holder() is None
    assert b.try_acquire("erasure recompute") is None
    assert a.try_acquire("nightly run") is not None


def test_a_crashed_holders_lease_expires_and_its_late_writes_are_fenced(
    dbs: tuple[ControlDatabase, ControlDatabase],
) -> None:
    clock = Clock()
    crashed = BatchLock(dbs[0], lease_s=30, clock=clock)
    other = BatchLock(dbs[1], lease_s=30, clock=clock)
    assert crashed.try_acquire("nightly run") is None  # then stops renewing
    clock.now += 29
    assert other.try_acquire("nightly run") is not None, "the lease still runs"
    clock.now += 2
    assert other.holder() is None
    assert other.try_acquire("nightly run") is None, "the lease passed: taken over"
    # The old holder wakes up: it cannot renew, its fence refuses, its release is a no-op.
    assert crashed.renew() is False
    with pytest.raises(BatchRunningError, match="lost the batch lock"):
        crashed.check()
    crashed.release()
    held = crashed.holder()
    assert held is not None
    assert held.holder == other.id
    other.check()  # the new holder is fine


def test_held_renews_its_lease_while_it_works(
    dbs: tuple[ControlDatabase, ControlDatabase],
) -> None:
    a = BatchLock(dbs[0], lease_s=0.4)
    b = BatchLock(dbs[1], lease_s=0.4)
    refused: list[str] = []
    with a.held("nightly run"):
        deadline = time.monotonic() + 1.2  # three leases: only renewals keep it
        while time.monotonic() < deadline:
            with (
                pytest.raises(BatchRunningError, match="already running: held by") as info,
                b.held("nightly run"),
            ):
                pass
            refused.append(str(info.value))
            time.sleep(0.1)
        a.check()
    assert refused
    assert all("nightly run" in r for r in refused)
    with b.held("nightly run"):
        assert a.try_acquire("nightly run") is not None


def test_held_waits_for_the_holder_when_asked(
    dbs: tuple[ControlDatabase, ControlDatabase],
) -> None:
    a = BatchLock(dbs[0], lease_s=5)
    b = BatchLock(dbs[1], lease_s=5)
    done = threading.Event()

    def hold() -> None:
        with a.held("nightly run"):
            done.wait(0.3)

    thread = threading.Thread(target=hold)
    thread.start()
    time.sleep(0.1)
    with b.held("nightly run", wait_s=5, poll_s=0.05):
        assert b.holder() is not None
    thread.join()


def test_a_wait_for_the_lock_ends_when_the_process_stops(
    dbs: tuple[ControlDatabase, ControlDatabase],
) -> None:
    a = BatchLock(dbs[0], lease_s=5)
    b = BatchLock(dbs[1], lease_s=5)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    began = time.monotonic()
    with (
        a.held("nightly run"),
        pytest.raises(BatchRunningError, match="already running"),
        b.held("nightly run", wait_s=60, poll_s=0.05, stop=stop),
    ):
        pass
    assert time.monotonic() - began < 5


def test_state_is_shared_and_a_run_cut_short_is_marked_abandoned(
    dbs: tuple[ControlDatabase, ControlDatabase],
) -> None:
    here, there = BatchState(dbs[0]), BatchState(dbs[1])
    crashed = here.start_run("nightly", "host-a")
    here.record([ComputedDay("2026-03-01", "f1", 3, 10, "2026-03-02T00:00:00.000Z")])
    here.set_meta("as_of_day", "2026-03-01")
    assert there.days()["2026-03-01"].fingerprint == "f1"
    assert there.get_meta("as_of_day") == "2026-03-01"
    run = there.start_run("nightly", "host-b")
    there.finish_run(
        run, status="ok", days=["2026-03-01"], as_of=None, archive_version=3, detail={}
    )
    latest, first = there.runs(2)
    assert (latest.id, latest.status, latest.host) == (run, "ok", "host-b")
    assert (first.id, first.status, first.host) == (crashed, "abandoned", "host-a")
    assert first.finished_at is not None
    there.forget(["2026-03-01"])
    assert here.days() == {}

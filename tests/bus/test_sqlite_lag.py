"""The SQLite bus's lag: found by key, whatever the length of the log."""

from __future__ import annotations

from pathlib import Path

from headwater.bus import Message
from headwater.bus.sqlite import SqliteBus


def _steps_of_lag(bus: SqliteBus, group: str) -> int:
    """SQLite virtual-machine steps (in units of 100) that ``bus.lag(group)`` takes."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn = bus._db.conn
    conn.set_progress_handler(count, 100)
    try:
        bus.lag(group)
    finally:
        conn.set_progress_handler(None, 100)
    return steps


def test_lag_reads_the_same_few_batches_whatever_the_length_of_the_log(tmp_path: Path) -> None:
    # The dashboard and the metrics ask every few seconds, under the lock the publishers
    # take: a query that walked the log from its head held them up more as the log grew.
    bus = SqliteBus(f"sqlite:///{tmp_path / 'bus.db'}", partitions=1)
    consumer = bus.consumer("g")

    def grow(batches: int) -> None:
        for _ in range(batches):
            bus.publish([Message("u", b"x" * 2_000) for _ in range(5)])

    grow(50)
    consumer.commit({0: 5 * 50 - 1})  # one record behind the end
    short = _steps_of_lag(bus, "g")
    grow(2_000)
    consumer.commit({0: 5 * 2_050 - 1})
    long = _steps_of_lag(bus, "g")
    lag = bus.lag("g")
    assert [p.lag_events for p in lag] == [1]
    assert lag[0].lag_seconds >= 0
    assert long <= short + 2, (short, long)
    bus.close()

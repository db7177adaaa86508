"""The platform's erasure participant on one request: the bus log, the dead letters and
the idempotency window of the embedded stack, each store the size of a long run.

Setup (untimed): a SQLite bus of ``--signals`` signals (8 partitions, batches of 500,
Zipf users among 100,000) and a SQLite idempotency window of as many entries. Then
``--requests`` erasures of one user each (users drawn uniformly: most have a few
events, a few have many), through connections opened after the setup:

- ``erase_many`` as the participant runs it (the window's scans in a thread of their
  own beside the bus log's and the dead letters');
- baseline, same run, alternated request by request: the same three stores erased one
  after another in one thread (``_bus_log``, ``_dead_letters``, ``_window``), as before.

Wall and CPU time per request (p50, p99), and the ratio of the p50 wall times.

    .venv/bin/python bench/bench_platform_erasure.py [--signals 860000] [--requests 20]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from headwater.bus.base import Message
from headwater.bus.dead_letters import DeadLetterStore
from headwater.bus.sqlite import SqliteBus
from headwater.contract.signal import Signal, encode_signal
from headwater.control import open_control_database
from headwater.dedupe.sqlite import SqliteIdempotencyWindow
from headwater.erasure.events import Confirmation, ErasureEvent
from headwater.runtime.platform import PlatformErasure

USERS = 100_000


def _user(rnd: random.Random) -> str:
    return f"user-{min(int(rnd.paretovariate(1.2)) - 1, USERS - 1):06d}"


def prepare(home: Path, signals: int) -> PlatformErasure:
    """The three stores, filled (untimed)."""
    rnd = random.Random(1)
    when = datetime(2026, 12, 4, 10, tzinfo=UTC)
    bus = SqliteBus(f"sqlite:///{home}/bus.db")
    window = SqliteIdempotencyWindow(f"sqlite:///{home}/dedupe.db", window_s=86_400)
    conn = window._conn  # filled directly: the claims are not measured
    conn.execute("BEGIN")
    for start in range(0, signals, 500):
        batch = []
        for i in range(start, min(start + 500, signals)):
            user = _user(rnd)
            event = Signal(
                event_id=f"ev-{i:09d}",
                event_type="view",
                user_id=user,
                item_id=f"item-{rnd.randrange(50_000)}",
                surface="web",
                timestamp=when,
                payload={"note": "x" * 120},
                producer="web",
                received_at=when,
                request_id=f"req-{start}",
            )
            batch.append(Message(user, encode_signal(event)))
        bus.publish(batch)
        conn.executemany(
            "INSERT INTO hw_dedupe VALUES (?, ?, ?, NULL)",
            [(f"ev-{i:09d}", m.key, 1_733_306_400_000 + i) for i, m in enumerate(batch, start)],
        )
    conn.execute("COMMIT")
    for store in (bus, window):
        store.close()
    # Checkpointed, then opened anew: the participant's process reads the stores through
    # its own connections, their caches cold, as after a restart.
    for name in ("bus.db", "dedupe.db"):
        with sqlite3.connect(home / name) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    control = open_control_database(f"sqlite:///{home}/control.db")
    return PlatformErasure(
        SqliteBus(f"sqlite:///{home}/bus.db"),
        DeadLetterStore(control),
        SqliteIdempotencyWindow(f"sqlite:///{home}/dedupe.db", window_s=86_400),
    )


def sequential(platform: PlatformErasure) -> Callable[[list[ErasureEvent]], list[Confirmation]]:
    """The baseline: the three stores one after another in this thread."""

    def run(events: list[ErasureEvent]) -> list[Confirmation]:
        out = platform._bus_log(events)
        out += platform._dead_letters(events)
        return out + platform._window(events)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signals", type=int, default=860_000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hw-bench-platform-") as tmp:
        began = time.perf_counter()
        platform = prepare(Path(tmp), args.signals)
        setup_s = time.perf_counter() - began
        runs = {"participant": platform.erase_many, "one_after_another": sequential(platform)}
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        rnd = random.Random(7)
        for i in range(args.requests):
            for name, erase in runs.items():
                event = ErasureEvent(
                    request_id=f"er_{name}_{i}",
                    # Any user: most have a few events, some many.
                    user_id=f"user-{rnd.randrange(USERS):06d}",
                    requested_at=datetime.now(UTC),
                )
                wall, cpu = time.perf_counter(), time.process_time()
                confirmations = erase([event])
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
                assert len(confirmations) == 3, confirmations
                assert all(c.rows_remaining == 0 for c in confirmations), confirmations
    figures = {
        name: {
            "wall_ms": _summary([w for w, _ in found]),
            "cpu_ms": _summary([c for _, c in found]),
        }
        for name, found in times.items()
    }
    emit(
        "platform_erasure",
        {
            "signals": args.signals,
            "requests": args.requests,
            "setup_s": round(setup_s, 1),
            **figures,
            "wall_p50_ratio": round(
                figures["participant"]["wall_ms"]["p50"]
                / figures["one_after_another"]["wall_ms"]["p50"],
                2,
            ),
        },
    )


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50": round(statistics.median(ordered) * 1000, 1),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
    }


if __name__ == "__main__":
    main()

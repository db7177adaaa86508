"""Crash and restart: a consumer killed with SIGKILL at random points loses nothing and
counts nothing twice, on every bus backend."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from headwater.bus import Message, open_bus
from tests.bus._counting import CountingHandler

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 100_000
USERS = 2_000


def _spawn(bus_url: str, store: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.bus.crash_worker", bus_url, str(store)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


def _applied(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        with sqlite3.connect(store, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM seen").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # the table is not created yet


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing_and_double_counts_nothing(
    bus_url: str, tmp_path: Path
) -> None:
    rng = random.Random(20261125)
    bus = open_bus(bus_url)
    sent = [Message(f"user-{rng.randrange(USERS)}", f"ev-{i}".encode()) for i in range(EVENTS)]
    for start in range(0, EVENTS, 500):
        bus.publish(sent[start : start + 500])
    bus.close()
    store = tmp_path / "store.db"
    log = tmp_path / "worker.log"

    kills = 0
    applied_before = 0
    for _ in range(5):
        proc = _spawn(bus_url, store, log)
        # Kill mid-stream: once this process has applied something (a Kafka member first
        # waits for the group to assign it partitions), at a random moment after that.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if _applied(store) > applied_before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        applied_before = _applied(store)
        if applied_before < EVENTS:
            kills += 1  # killed in the middle of the stream
    final = _spawn(bus_url, store, log)
    final.wait(timeout=600)
    assert final.returncode == 0, log.read_text()[-2000:]

    handler = CountingHandler(str(store))
    try:
        expected_ids = {m.value.decode() for m in sent}
        assert handler.seen() == expected_ids, "an event was lost"
        assert handler.counts() == dict(Counter(m.key for m in sent)), "an event counted twice"
    finally:
        handler.close()
    assert kills >= 1, "the consumer was never killed mid-stream; the test proved nothing"

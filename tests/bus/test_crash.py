"""Crash and restart: a consumer killed with SIGKILL at random points loses nothing and
counts nothing twice, on every bus backend."""

from __future__ import annotations

import os
import random
import signal
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
    for _ in range(6):
        proc = _spawn(bus_url, store, log)
        time.sleep(rng.uniform(0.3, 2.5))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
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
    assert kills >= 1, "the consumer finished before it could be killed; test proves nothing"

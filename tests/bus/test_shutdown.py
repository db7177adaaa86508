"""SIGTERM: the consumer finishes its batch, commits and exits cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from headwater.bus import Message, open_bus
from tests.bus._counting import CountingHandler

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import sys, time
from headwater.bus import open_bus
from headwater.runtime import ConsumerRuntime
from tests.bus._counting import CountingHandler

class Slow(CountingHandler):
    def handle(self, records):
        time.sleep(0.05)
        super().handle(records)

bus = open_bus(sys.argv[1])
handler = Slow(sys.argv[2])
runtime = ConsumerRuntime(bus, "term", handler, batch_size=50)
print("ready", flush=True)
runtime.run()
handler.close()
bus.close()
print("stopped", flush=True)
"""


def test_sigterm_finishes_the_batch_commits_and_exits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bus.db'}?partitions=2"
    bus = open_bus(url)
    bus.publish([Message(f"u{i % 7}", f"e{i}".encode()) for i in range(20_000)])
    store = tmp_path / "store.db"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, url, str(store)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert b"stopped" in out
    handler = CountingHandler(str(store))
    applied = len(handler.seen())
    handler.close()
    committed = sum(p.committed for p in bus.lag("term"))
    bus.close()
    assert 0 < applied < 20_000
    # Everything applied is committed, and nothing committed was left unapplied.
    assert committed == applied

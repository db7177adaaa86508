"""SIGKILL the feature consumer during a stream; after restart every count equals the count
computed directly from the published events."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from headwater.bus import Message, open_bus
from headwater.config import Settings
from headwater.contract.signal import Signal, encode_signal
from headwater.features.engine import FeatureEngine
from headwater.online import open_online_store

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_killed_feature_consumer_counts_every_event_once(tmp_path: Path) -> None:
    rng = random.Random(11)
    home = tmp_path / "hw"
    settings = Settings.from_env(home)
    bus = open_bus(settings.bus_url)
    now = datetime.now(UTC)
    sent: list[Signal] = []
    for i in range(60_000):
        etype = rng.choice(["view", "view", "click", "save"])
        sent.append(
            Signal(
                event_id=f"e{i}",
                event_type=etype,
                user_id=f"u{int(rng.paretovariate(1.2)) % 3000}",
                surface="web",
                timestamp=now - timedelta(milliseconds=60_000 - i),
                payload={"action": "add"} if etype == "save" else {},
                item_id=f"i{rng.randrange(500)}",
                received_at=now,
            )
        )
    for start in range(0, len(sent), 500):
        chunk = sent[start : start + 500]
        bus.publish([Message(s.user_id, encode_signal(s)) for s in chunk])
    bus.close()
    env = dict(os.environ, HEADWATER_HOME=str(home))
    cmd = [
        sys.executable,
        "-m",
        "headwater",
        "consume",
        "features",
        "--until-idle",
        "--batch-size",
        "700",
    ]
    kills = 0
    with (tmp_path / "consumer.log").open("ab") as log:
        for _ in range(5):
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=log)
            time.sleep(rng.uniform(0.8, 2.0))
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        final = subprocess.run(
            cmd, env=env, cwd=ROOT, stdout=log, stderr=log, timeout=600, check=False
        )
    assert final.returncode == 0, (tmp_path / "consumer.log").read_text()[-2000:]
    assert kills >= 1, "the consumer finished before it could be killed"

    store = open_online_store(settings.online_url)
    engine = FeatureEngine()
    want: dict[str, Counter[str]] = {}
    for s in sent:
        want.setdefault(s.user_id, Counter())[s.event_type] += 1
    rows = store.get("user", list(want))
    store.close()
    assert set(rows) == set(want)
    for user, counts in want.items():
        assert engine.decode(rows[user])["counts"] == dict(counts), user

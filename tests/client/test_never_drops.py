"""The producer SDK against a real gateway that goes away: an outage, a producer killed
with SIGKILL, a client closed or left open at exit. Each test counts what the bus holds:
every event once, none lost, none twice.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
import pytest

from headwater.application import Application
from headwater.bus import open_bus
from headwater.client import AsyncHeadwaterClient, HeadwaterClient, RejectedEvent, RetryPolicy
from headwater.contract.signal import decode_signal
from headwater.errors import PublishFailedError
from headwater.gateway.app import create_app
from tests._gateway_fixtures import make_key
from tests._live import free_port, serve

#: Retries close together, so that a recovered gateway is found within half a second.
QUICK = RetryPolicy(max_retries=3, base_s=0.05, cap_s=0.5)


def on_bus(hw: Application) -> Counter[str]:
    """How many records the bus holds for each event id."""
    bus = open_bus(hw.settings.bus_url)
    consumer = bus.consumer(f"check-{time.time_ns()}")
    seen: Counter[str] = Counter()
    while records := consumer.poll(5000, 0.2):
        seen.update(decode_signal(r.value).event_id for r in records)
    consumer.close()
    bus.close()
    return seen


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Recording(httpx.HTTPTransport):
    """The real transport, noting the event ids of every attempt (failed ones too)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: Counter[str] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.update(e["event_id"] for e in msgspec.json.decode(request.read()))
        return super().handle_request(request)


def test_ten_thousand_events_tracked_through_a_ten_second_outage(
    hw: Application, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens here until the gateway starts
    transport = Recording()
    errors: list[PublishFailedError] = []
    client = HeadwaterClient(
        f"http://127.0.0.1:{port}",
        make_key(hw, "web", "producer"),
        flush_interval=0.2,
        retry=QUICK,
        on_error=errors.append,
        transport=transport,
    )
    ids: list[str] = []
    slowest = 0.0
    started = time.monotonic()
    for i in range(10_000):  # one a millisecond: ten seconds of traffic, all of it down
        t0 = time.perf_counter()
        ids.append(client.track("view", f"u{i % 97}", "web", item_id=f"i{i}", payload={}))
        slowest = max(slowest, time.perf_counter() - t0)
        if i % 100 == 99:
            time.sleep(max(0.0, started + (i + 1) / 1000 - time.monotonic()))
    assert time.monotonic() - started >= 10.0
    assert client.queued == 10_000, "nothing was accepted and nothing was dropped"
    assert errors, "the background sender said it could not deliver"
    with serve(create_app(hw), port=port):
        recovered = time.monotonic()
        wait_until(lambda: client.queued == 0)
        drained = time.monotonic() - recovered
        client.close()
    seen = on_bus(hw)
    assert sorted(seen) == sorted(ids), "every tracked event is on the bus"
    assert set(seen.values()) == {1}, "and none twice"
    assert client.totals.accepted == 10_000
    # The head batch was tried again and again, and every attempt carried tracked ids
    # and no other: an event keeps its id from one retry to the next.
    assert max(transport.sent.values()) >= 10
    assert set(transport.sent) == set(ids)
    assert slowest < 0.5, "track() never waits for the network"
    with capsys.disabled():
        print(f"\n10,000 events after a 10 s outage: drained {drained:.2f} s after recovery")


def test_a_rejected_event_is_reported_once_its_batch_accepted(hw: Application) -> None:
    transport = Recording()
    seen: list[RejectedEvent] = []
    with serve(create_app(hw)) as url:
        client = HeadwaterClient(
            url,
            make_key(hw, "web", "producer"),
            batch_size=10,
            flush_interval=0.05,
            on_rejection=seen.append,
            transport=transport,
        )
        good = [client.track("view", f"u{i}", "web", item_id="i1") for i in range(9)]
        bad = client.track("view", "u1", "web", item_id="i1", payload={"dwell_ms": -5})
        wait_until(lambda: client.queued == 0)
        time.sleep(0.3)  # six more flush intervals
        client.close()
    assert [(r.event_id, r.field) for r in seen] == [(bad, "payload.dwell_ms")]
    assert transport.sent[bad] == 1, "a rejection is final: never sent again"
    assert on_bus(hw) == dict.fromkeys(good, 1)


def test_close_flushes_what_is_queued(hw: Application) -> None:
    with serve(create_app(hw)) as url:
        client = HeadwaterClient(url, make_key(hw, "web", "producer"), flush_interval=60)
        ids = [client.track("click", f"u{i}", "web", item_id="i1") for i in range(37)]
        assert client.queued == 37  # a batch of 500 and a minute: nothing was due yet
        client.close()
    assert on_bus(hw) == dict.fromkeys(ids, 1)


_PRODUCER = """
import sys, time
from headwater.client import HeadwaterClient, RetryPolicy
url, key, spool, n, out, close = sys.argv[1:7]
client = HeadwaterClient(
    url, key, spool=spool or None, batch_size=100, flush_interval=float(close or 0.05),
    retry=RetryPolicy(base_s=0.01, cap_s=0.2),
)
ids = [client.track("view", f"u{i % 13}", "web", item_id=f"i{i}") for i in range(int(n))]
with open(out, "w") as f:
    f.write("\\n".join(ids))
print("tracked", flush=True)
if not close:
    time.sleep(60)  # the test kills it here
"""


def _produce(
    url: str, key: str, spool: Path | None, n: int, out: Path, *, at_exit: bool = False
) -> subprocess.Popen[str]:
    args = [url, key, str(spool or ""), str(n), str(out), "60" if at_exit else ""]
    proc = subprocess.Popen(
        [sys.executable, "-c", _PRODUCER, *args], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "tracked"
    return proc


def _reap(proc: subprocess.Popen[str]) -> int:
    code = proc.wait(30)
    assert proc.stdout is not None
    proc.stdout.close()
    return code


def _spooled(path: Path) -> int:
    with sqlite3.connect(path) as db:
        count = int(db.execute("SELECT count(*) FROM spooled").fetchone()[0])
    db.close()
    return count


@pytest.mark.parametrize("gateway", ["down", "slow"])
def test_a_producer_killed_with_sigkill_loses_nothing_with_a_spool(
    hw: Application, tmp_path: Path, gateway: str
) -> None:
    spool, out = tmp_path / "producer.spool", tmp_path / "ids.txt"
    with serve(create_app(hw)) as url:
        if gateway == "down":
            target, key = f"http://127.0.0.1:{free_port()}", make_key(hw, "web", "producer")
        else:  # 100 events now, then 100 a second: killed in the middle of sending
            target = url
            key, _ = hw.keys.create("web", rate_limit_eps=100, burst=100)
        proc = _produce(target, key, spool, 3000, out)
        if gateway == "down":
            time.sleep(0.3)  # the sender tries, and fails
        else:
            wait_until(lambda: _spooled(spool) < 3000)  # a first batch got through
        proc.send_signal(signal.SIGKILL)
        _reap(proc)
        tracked = out.read_text().split("\n")
        left = _spooled(spool)
        assert 0 < left <= 3000
        if gateway == "down":
            assert left == 3000
        else:
            assert left < 3000, "some were sent before the kill"
        with HeadwaterClient(url, make_key(hw, "web", "producer"), spool=spool) as client:
            assert client.restored == left
    assert _spooled(spool) == 0, "what the gateway accepted leaves the spool"
    seen = on_bus(hw)
    assert sorted(seen) == sorted(tracked), "none lost"
    assert set(seen.values()) == {1}, "none twice"


_ASYNC_PRODUCER = """
import asyncio, sys
from headwater.client import AsyncHeadwaterClient
url, key, out = sys.argv[1:4]

async def main():
    client = AsyncHeadwaterClient(url, key, flush_interval=60)
    return [await client.track("click", f"u{i}", "web", item_id="i1") for i in range(50)]

ids = asyncio.run(main())  # the loop ends, the client is neither flushed nor closed
with open(out, "w") as f:
    f.write("\\n".join(ids))
print("tracked", flush=True)
"""


def test_a_client_never_closed_flushes_at_exit(hw: Application, tmp_path: Path) -> None:
    out = tmp_path / "ids.txt"
    with serve(create_app(hw)) as url:
        proc = _produce(url, make_key(hw, "web", "producer"), None, 50, out, at_exit=True)
        assert _reap(proc) == 0
    assert on_bus(hw) == dict.fromkeys(out.read_text().split("\n"), 1)


def test_an_async_client_never_closed_flushes_at_exit_without_its_loop(
    hw: Application, tmp_path: Path
) -> None:
    out = tmp_path / "ids.txt"
    with serve(create_app(hw)) as url:
        key = make_key(hw, "web", "producer")
        args = [sys.executable, "-c", _ASYNC_PRODUCER, url, key, str(out)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
    assert on_bus(hw) == dict.fromkeys(out.read_text().split("\n"), 1)


def test_the_async_client_sends_from_its_task_and_survives_an_outage(hw: Application) -> None:
    port = free_port()
    key = make_key(hw, "ios", "producer")

    async def main() -> tuple[list[str], int]:
        client = AsyncHeadwaterClient(
            f"http://127.0.0.1:{port}", key, batch_size=100, flush_interval=0.1, retry=QUICK
        )
        ids = [
            await client.track("save", f"u{i}", "ios", item_id="i9", payload={"action": "add"})
            for i in range(1_050)
        ]
        await asyncio.sleep(1.0)  # a second of outage with the task retrying
        assert client.queued == 1_050
        with serve(create_app(hw), port=port):
            while client.queued:  # no flush: the task sends full batches and the tail
                await asyncio.sleep(0.02)
            late = [
                await client.track("save", "u1", "ios", item_id="i2", payload={"action": "add"})
                for _ in range(7)
            ]
            await client.aclose()  # and the close sends what came after
        return ids + late, client.totals.accepted

    ids, accepted = asyncio.run(main())
    assert accepted == 1_057
    assert on_bus(hw) == dict.fromkeys(ids, 1)

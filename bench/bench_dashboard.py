"""The dashboard's cost per open tab: CPU ms per second of the server process, per tab.

    .venv/bin/python bench/bench_dashboard.py --before ../checkout-of-main [--after .]
        [--tabs 20] [--rounds 2] [--idle 10] [--open 12]

Each tree (``--before``, ``--after``: checkouts of headwater) runs its own embedded stack
(``EmbeddedStack``: gateway, consumers, orchestrator, nightly batch scheduler) in a
process of its own, both at once, seeded alike: about 3 s of the demo teams' traffic
(``TeamTraffic``) and 20 erasure requests run to completion. Then, alternating between
the two servers for ``--rounds`` rounds, each server is measured twice:

- idle: no tab open, ``--idle`` seconds, half before and half after the open phase;
- open: ``--tabs`` simulated tabs, each logged in with its own session cookie and polling
  the data endpoints the way that tree's page does, ``--open`` seconds.

The page's polling is read from the server: a tree that serves ``/v1/dashboard/live``
is polled like the new page (that document every 2 s, ``/v1/dashboard/trends`` every
10 s with ``If-None-Match``), else like the page before it (every second
``/v1/stats/ingestion``, ``/v1/slo``, ``/v1/stats/consumers`` and
``/v1/deletions?status=all&limit=20`` together, ``/v1/status`` every 5 s).

CPU is the server process's user + system time (``/proc/<pid>/stat``) over the phase's
wall time. Cost per tab = (open - idle) / tabs, in CPU ms per second. Prints one JSON
document: every phase, the median cost per tab of each tree and after / before.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, free_port
from _workload import cpu_seconds

#: Runs in the server process, on the tree's own code (PYTHONPATH=<tree>/src).
SERVER = r"""
import json, sys, time
from headwater.config import Settings
from headwater.demo.live import TeamTraffic
from headwater.stack import EmbeddedStack

home, port = sys.argv[1], int(sys.argv[2])
stack = EmbeddedStack(Settings.from_env(home), port=port, orchestrator_interval_s=0.5)
stack.start()
traffic = TeamTraffic(stack.app.keys, stack.url, rate=400, invalid_rate=0.05)
traffic.start()
time.sleep(3)
traffic.stop()
for i in range(20):
    stack.app.orchestrator.request(
        f"u{i:07d}", legal_basis="gdpr-art17", requested_by="bench"
    )
deadline = time.monotonic() + 60
while stack.app.ledger.counts().get("completed", 0) < 20 and time.monotonic() < deadline:
    time.sleep(0.2)
key, _ = stack.app.keys.create("sre", roles=("operator",))
print(json.dumps({"url": stack.url, "key": key,
                  "completed": stack.app.ledger.counts().get("completed", 0)}), flush=True)
sys.stdin.read()  # until the benchmark closes it
stack.stop()
"""


class Server:
    """One tree's stack in a process of its own."""

    def __init__(self, name: str, tree: Path, home: Path) -> None:
        self.name = name
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        env.pop("HEADWATER_HOME", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(home), str(free_port())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        self.info: dict[str, Any] = {}

    def ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} server did not start")
        self.info = json.loads(line)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _tab(url: str, key: str, new_page: bool, stop: asyncio.Event, tally: list[int]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        login = await client.post("/dashboard/session", json={"key": key})
        login.raise_for_status()

        async def get(path: str, headers: dict[str, str] | None = None) -> httpx.Response:
            r = await client.get(path, headers=headers)
            if r.status_code not in (200, 304):
                raise RuntimeError(f"{path}: {r.status_code} {r.text[:200]}")
            tally[0] += 1
            tally[1] += len(r.content)
            return r

        async def every(period: float, poll: Any) -> None:
            while not stop.is_set():
                started = time.monotonic()
                await poll()
                with contextlib.suppress(TimeoutError):  # the period ended: poll again
                    await asyncio.wait_for(
                        stop.wait(), max(0.0, period - (time.monotonic() - started))
                    )

        if new_page:
            etag = ""

            async def live() -> None:
                await get("/v1/dashboard/live")

            async def trends() -> None:
                nonlocal etag
                r = await get("/v1/dashboard/trends", {"If-None-Match": etag} if etag else None)
                etag = r.headers.get("etag", etag)

            await asyncio.gather(every(2.0, live), every(10.0, trends))
        else:

            async def tables() -> None:
                await asyncio.gather(
                    get("/v1/stats/ingestion?window=60"),
                    get("/v1/slo?window=300"),
                    get("/v1/stats/consumers"),
                    get("/v1/deletions?status=all&limit=20"),
                )

            async def status() -> None:
                await get("/v1/status")

            await asyncio.gather(every(1.0, tables), every(5.0, status))


async def _open_tabs(server: Server, tabs: int, seconds: float) -> dict[str, Any]:
    url, key = server.info["url"], server.info["key"]
    async with httpx.AsyncClient(base_url=url) as probe:
        new_page = (await probe.get("/v1/dashboard/live")).status_code != 404
    stop = asyncio.Event()
    tally = [0, 0]
    pid = server.proc.pid
    tasks = [asyncio.create_task(_tab(url, key, new_page, stop, tally)) for _ in range(tabs)]
    await asyncio.sleep(1.0)  # logins and first answers are not part of the steady state
    tally[:] = [0, 0]
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    requests, sent = tally
    stop.set()
    await asyncio.gather(*tasks)
    return {
        "page": "new" if new_page else "before",
        "cpu_ms_per_s": round((cpu1 - cpu0) / (t1 - t0) * 1000, 1),
        "requests_per_s": round(requests / (t1 - t0), 1),
        "kb_per_s": round(sent / (t1 - t0) / 1024, 1),
    }


def _idle(server: Server, seconds: float) -> float:
    pid = server.proc.pid
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return round((cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout measured first")
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--tabs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--idle", type=float, default=10.0, help="seconds with no tab (half before, half after)"
    )
    parser.add_argument("--open", type=float, default=12.0, help="seconds with the tabs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hw-bench-dash-") as tmp:
        servers = [
            Server("before", args.before.resolve(), Path(tmp) / "before"),
            Server("after", args.after.resolve(), Path(tmp) / "after"),
        ]
        try:
            for s in servers:
                s.ready()
            time.sleep(2.0)  # let the seeded work drain before measuring
            phases: list[dict[str, Any]] = []
            for round_ in range(1, args.rounds + 1):
                for s in servers if round_ % 2 else servers[::-1]:
                    # Idle on both sides of the open phase: the baseline's drift cancels.
                    idle_first = _idle(s, args.idle / 2)
                    opened = asyncio.run(_open_tabs(s, args.tabs, args.open))
                    idle = round((idle_first + _idle(s, args.idle / 2)) / 2, 1)
                    per_tab = (opened["cpu_ms_per_s"] - idle) / args.tabs
                    phases.append(
                        {
                            "tree": s.name,
                            "round": round_,
                            "idle_cpu_ms_per_s": idle,
                            **{f"open_{k}": v for k, v in opened.items()},
                            "per_tab_cpu_ms_per_s": round(per_tab, 2),
                        }
                    )
        finally:
            for s in servers:
                s.stop()

    def median(tree: str) -> float:
        return round(
            statistics.median(p["per_tab_cpu_ms_per_s"] for p in phases if p["tree"] == tree), 2
        )

    before, after = median("before"), median("after")
    emit(
        "dashboard_cost_per_tab",
        {
            "before_tree": str(args.before),
            "after_tree": str(args.after),
            "tabs": args.tabs,
            "idle_s": args.idle,
            "open_s": args.open,
            "seeded_completed_erasures": {s.name: s.info.get("completed") for s in servers},
            "phases": phases,
            "per_tab_cpu_ms_per_s": {"before": before, "after": after},
            "after_over_before": round(after / before, 4) if before else None,
        },
    )


if __name__ == "__main__":
    main()

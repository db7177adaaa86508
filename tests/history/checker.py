"""The exactly-once history checker: real processes, injected faults, an exact ledger.

Two gateways (``headwater serve``), feature consumers and an archive consumer run as
separate processes on one deployment (the embedded files, NATS + Redis + PostgreSQL,
or NATS + a Redis Cluster + PostgreSQL with a master killed midway). A driver
publishes a known set of events in batches, some sent to both gateways at once (a
hedged retry), some sent again after a client timeout, every one sent until a gateway
accepts it. Meanwhile a chaos thread SIGKILLs random gateways and
consumers and starts them again, and a second feature consumer joins during a backlog
(a rebalance). At the end, every accepted event id must be published exactly once on
the bus, counted exactly once in its user's features and stored exactly once in the
archive.

It uses only the command line, the HTTP API, the stores' own files or servers and the
bus's read API, so it runs against any version of headwater:
``python tests/history/checker.py --home DIR`` with the interpreter of the version to
check. Run so against 89a31a3 (check, publish, then remember; no fencing) it finds 960
of 10,000 ids published twice on the embedded stack, and 600 on NATS + Redis +
PostgreSQL (40 of them stored twice in the archive); most copies are forgiven by the
sinks (a feature row remembers its user's last ids, an archive batch keeps one of each
id), so the bus is read too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec

FEATURES = "features"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Report:
    """What the run did and what it found."""

    events: int = 0
    batches: int = 0
    hedged: int = 0
    timed_out_resends: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    doubled_in_features: dict[str, int] = field(default_factory=dict)
    archive_lost: list[str] = field(default_factory=list)
    archive_doubled: list[str] = field(default_factory=list)
    bus_lost: list[str] = field(default_factory=list)
    bus_doubled: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """0 lost and 0 double, on the bus, in the features and in the archive."""
        return not (
            self.lost
            or self.doubled_in_features
            or self.archive_lost
            or self.archive_doubled
            or self.bus_lost
            or self.bus_doubled
        )

    def summary(self) -> dict[str, Any]:
        """The figures, for a test's message or the command line."""
        return {
            "events": self.events,
            "batches": self.batches,
            "hedged_batches": self.hedged,
            "resent_after_timeout": self.timed_out_resends,
            "faults": dict(self.faults),
            "features_lost": len(self.lost),
            "features_double": sum(self.doubled_in_features.values()),
            "archive_lost": len(self.archive_lost),
            "archive_double": len(self.archive_doubled),
            "bus_lost": len(self.bus_lost),
            "bus_double": len(self.bus_doubled),
            "seconds": round(self.seconds, 1),
            "examples": {
                "lost": self.lost[:5],
                "double": dict(list(self.doubled_in_features.items())[:5]),
                "archive_lost": self.archive_lost[:5],
                "archive_double": self.archive_doubled[:5],
                "bus_double": self.bus_doubled[:5],
            },
        }


class Component:
    """One process of the deployment, which the chaos may kill and start again."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "headwater", *self.args],
                env=self.env,
                stdout=out,
                stderr=out,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class Deployment:
    """The processes and their environment."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        logs = home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.ports = [free_port(), free_port()]
        self.gateways = [
            Component(f"gateway-{i}", ["serve", "--port", str(p)], env, logs / f"gw{i}.log")
            for i, p in enumerate(self.ports)
        ]
        self.features = [
            Component(f"features-{i}", ["consume", FEATURES], env, logs / f"features{i}.log")
            for i in range(2)
        ]
        self.archive = Component("archive", ["consume", "archive"], env, logs / "archive.log")

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "headwater", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    def wait_ready(self, url: str, timeout: float = 60, component: Component | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = component.proc if component is not None else None
            if component is not None and proc is not None and proc.poll() is not None:
                # It exited at startup (a backend in failover did not answer its checks):
                # start it again, as a supervisor would.
                time.sleep(0.5)
                component.start()
            try:
                if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{url} did not start")

    def everything(self) -> list[Component]:
        return [*self.gateways, *self.features, self.archive]


def _events(users: int, per_user: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "event_id": f"h-{u:03d}-{n:04d}",
            "event_type": "view",
            "user_id": f"user-{u:03d}",
            "item_id": f"item-{n % 50}",
            "surface": "web",
            "timestamp": now,
            "payload": {},
        }
        for u in range(users)
        for n in range(per_user)
    ]


class Driver:
    """Publishes every batch until a gateway accepts it, with hedged and timed-out sends."""

    def __init__(
        self, deployment: Deployment, key: str, report: Report, seed: int, pace_s: float
    ) -> None:
        self.deployment = deployment
        self.pace_s = pace_s
        self.headers = {"Authorization": f"Bearer {key}"}
        self.report = report
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.accepted: set[str] = set()

    def _post(self, url: str, body: bytes, timeout: float) -> int | None:
        try:
            r = httpx.post(
                f"{url}/v1/signals",
                content=body,
                headers={**self.headers, "Content-Type": "application/json"},
                timeout=timeout,
            )
        except httpx.HTTPError:
            return None
        return r.status_code

    def send(self, batch: list[dict[str, Any]]) -> None:
        time.sleep(self.pace_s)  # spread the publishing over the faults
        body = msgspec.json.encode(batch)
        urls = self.deployment.urls
        with self.lock:
            mode = self.rng.random()
        if mode < 0.25:
            # A hedged retry: the same batch to both gateways at once.
            with self.lock:
                self.report.hedged += 1
            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(lambda u: self._post(u, body, 30), urls))
            if any(a in (200, 207) for a in answers):
                self._done(batch)
                return
        elif mode < 0.4:
            # A client that gave up waiting, and sends again (to the other gateway).
            with self.lock:
                self.report.timed_out_resends += 1
            self._post(urls[0], body, 0.005)
        while True:
            with self.lock:
                url = self.rng.choice(urls)
            if self._post(url, body, 30) in (200, 207):
                self._done(batch)
                return
            time.sleep(0.2)

    def _done(self, batch: list[dict[str, Any]]) -> None:
        with self.lock:
            self.accepted.update(e["event_id"] for e in batch)


class Chaos:
    """Kills random components with SIGKILL and starts them again."""

    def __init__(self, deployment: Deployment, report: Report, seed: int) -> None:
        self.deployment = deployment
        self.report = report
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop_event.wait(self.rng.uniform(0.8, 2.0)):
            victim = self.rng.choice(self.deployment.everything())
            if victim.proc is None or victim.proc.poll() is not None:
                continue
            victim.kill()
            self.report.faults[f"SIGKILL {victim.name.rsplit('-', 1)[0]}"] += 1
            if self.stop_event.wait(self.rng.uniform(0.2, 1.0)):
                victim.start()
                return
            victim.start()
            if victim in self.deployment.gateways:
                port = self.deployment.ports[self.deployment.gateways.index(victim)]
                self.deployment.wait_ready(f"http://127.0.0.1:{port}", component=victim)


def _features_by_user(env: dict[str, str], users: list[str]) -> dict[str, int]:
    """Each user's view count, read from the online store itself."""
    code = (
        "import json, sys, msgspec\n"
        "from headwater.config import Settings\n"
        "from headwater.online import open_online_store\n"
        "store = open_online_store(Settings.from_env().online_url)\n"
        "users = json.loads(sys.stdin.read())\n"
        "rows = store.get('user', users)\n"
        "out = {u: int(msgspec.msgpack.decode(rows[u]).get('counts', {}).get('view', 0))\n"
        "       for u in rows}\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(users),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return {u: int(n) for u, n in json.loads(done.stdout).items()}


def _archive_ids(home: Path, env: dict[str, str]) -> Counter[str]:
    from deltalake import DeltaTable

    root = env.get("HEADWATER_ARCHIVE_URL") or str(home / "archive")
    table = DeltaTable(f"{root.rstrip('/')}/signals").to_pyarrow_table(columns=["event_id"])
    return Counter(table.column("event_id").to_pylist())


def _bus_ids(env: dict[str, str]) -> Counter[str]:
    """How many times each event id was published: the whole log read from its start by
    a group of its own, through the bus API of the version under test. The sinks forgive
    a copy published close to the first (a feature row remembers its user's last ids, an
    archive batch keeps one of each id); the bus shows it."""
    code = (
        "import json, uuid\n"
        "from collections import Counter\n"
        "from headwater.config import Settings\n"
        "from headwater.bus import open_bus\n"
        "from headwater.contract.signal import decode_signal\n"
        "bus = open_bus(Settings.from_env().bus_url)\n"
        "group = 'history-check-' + uuid.uuid4().hex[:8]\n"
        "consumer = bus.consumer(group)\n"
        "counts = Counter()\n"
        "polls = 0\n"
        "while True:\n"
        "    records = consumer.poll(5000, timeout=1.0)\n"
        "    polls += 1\n"
        "    if records:\n"
        "        next_offsets = {}\n"
        "        for r in records:\n"
        "            if r.kind == 'signal':\n"
        "                counts[decode_signal(r.value).event_id] += 1\n"
        "            next_offsets[r.partition] = r.offset + 1\n"
        "        consumer.commit(next_offsets)\n"
        "    elif polls > 3 and sum(l.lag_events for l in bus.lag(group)) == 0:\n"
        "        break\n"
        "consumer.close()\n"
        "bus.close()\n"
        "print(json.dumps(counts))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return Counter(json.loads(done.stdout.strip().splitlines()[-1]))


def _lag(deployment: Deployment, group: str) -> int:
    out = deployment.cli("bus", "lag", group, "--json")
    rows = json.loads(out)
    return sum(int(r["lag_events"]) for r in rows)


def run(
    home: Path,
    env: dict[str, str],
    *,
    users: int = 100,
    per_user: int = 100,
    batch: int = 40,
    seed: int = 7,
    concurrency: int = 4,
    pace_s: float = 0.3,
    midway: Callable[[], str] | None = None,
    midway_after_s: float = 6.0,
) -> Report:
    """One history: publish, inject faults, drain, and check the ledger. ``midway`` is
    one more fault (a server's, say), injected ``midway_after_s`` into the publishing;
    it returns its name for the report."""
    started = time.monotonic()
    report = Report()
    env = {**env, "HEADWATER_HOME": str(home)}
    deployment = Deployment(home, env)
    deployment.cli("contracts", "apply")
    created = deployment.cli("producers", "create", "web")
    key = re.search(r"API key: (\S+)", created)
    if key is None:
        raise RuntimeError(f"no key in: {created}")
    deployment.archive.start()
    deployment.features[0].start()
    for gateway in deployment.gateways:
        gateway.start()
    for url in deployment.urls:
        deployment.wait_ready(url)
    events = _events(users, per_user)
    random.Random(seed).shuffle(events)
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    report.events, report.batches = len(events), len(batches)
    driver = Driver(deployment, key.group(1), report, seed, pace_s)
    chaos = Chaos(deployment, report, seed + 1)
    chaos.thread.start()
    extra: threading.Thread | None = None
    if midway is not None:
        fault = midway

        def inject() -> None:
            if not chaos.stop_event.wait(midway_after_s):
                report.faults[fault()] += 1

        extra = threading.Thread(target=inject, daemon=True)
        extra.start()
    try:
        with ThreadPoolExecutor(concurrency) as pool:
            half = len(batches) // 2
            list(pool.map(driver.send, batches[:half]))
            # A backlog, then a second feature consumer joins while it drains: a rebalance.
            deployment.features[1].start()
            report.faults["consumer joined during a backlog"] += 1
            list(pool.map(driver.send, batches[half:]))
    finally:
        chaos.stop_event.set()
        chaos.thread.join(60)
        if extra is not None:
            extra.join(60)
    # Everything running again, then drained.
    for component in deployment.everything():
        if component.proc is None or component.proc.poll() is not None:
            component.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if _lag(deployment, FEATURES) == 0 and _lag(deployment, "archive") == 0:
            break
        time.sleep(1)
    time.sleep(2)  # the archive's last gathered batch
    for component in deployment.everything():
        component.stop()
    accepted = driver.accepted
    expected_by_user: Counter[str] = Counter()
    for e in events:
        if e["event_id"] in accepted:
            expected_by_user[e["user_id"]] += 1
    found = _features_by_user(env, sorted(expected_by_user))
    for user, expected in expected_by_user.items():
        got = found.get(user, 0)
        if got < expected:
            report.lost.append(f"{user}: {expected - got} of {expected}")
        elif got > expected:
            report.doubled_in_features[user] = got - expected
    published = _bus_ids(env)
    report.bus_lost = sorted(accepted - set(published))
    report.bus_doubled = sorted(i for i, n in published.items() if n > 1)
    archived = _archive_ids(home, env)
    report.archive_lost = sorted(accepted - set(archived))
    report.archive_doubled = sorted(i for i, n in archived.items() if n > 1)
    report.seconds = time.monotonic() - started
    return report


def main() -> int:
    """``python tests/history/checker.py --home DIR``: one history, its report as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--per-user", type=int, default=100)
    args = parser.parse_args()
    report = run(args.home, dict(os.environ), users=args.users, per_user=args.per_user)
    print(json.dumps(report.summary(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

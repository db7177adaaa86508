"""An operator's scale-out run on this machine's servers: every component its own process.

NATS JetStream (a private topic, 4 partitions), Redis (a private key prefix) and
PostgreSQL (a private database) as the README's "On real engines" sets them up. Started
as separate processes: two gateways (``headwater serve``), two feature consumers,
``consume archive``, ``consume platform-erasure``, ``consume batch-erasure`` and
``orchestrate``. Then:

- ``--events`` signals over ``--users`` users in batches of 500, alternating gateways;
  every fifth batch is sent again to the other gateway (each of its events must come
  back ``duplicate``); after half the batches one feature consumer is killed with
  SIGKILL and another started;
- the feature rows are read back through the API: ``counts`` and ``window_counts``
  (1 h and 7 d) of every user must equal what the gateways accepted;
- one user is erased: the request must complete with every store confirmed, a scan of
  every Redis key and value under the prefix must find the user id before and 0 times
  after, and an event of that user dated before the erasure must be refused
  ``user_erased`` by both gateways;
- on SIGTERM every consumer must exit 0, and each gateway log that it stopped.

Everything the run made (stream, keys, database) is removed after. Prints JSON with the
checks and their figures; exits 1 if a check failed.

    .venv/bin/python bench/operator_run.py [--events 30000] [--users 400]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the byte-scan test's scans
from tests.erasure.scan import scan_redis

from _common import emit, free_port
from _workload import answers_health
from headwater.bus.nats import delete_bus

NATS = "nats://127.0.0.1:4222"
REDIS = "redis://127.0.0.1:6379/0"
POSTGRES = "postgresql://127.0.0.1:5432"
HEADWATER = [sys.executable, "-m", "headwater"]
CONSUMERS = ("features", "features", "archive", "platform-erasure", "batch-erasure")


class Run:
    """The run's servers' names, its environment and its processes."""

    def __init__(self, home: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.topic, self.prefix, self.database = f"op{tag}", f"op{tag}", f"hwop{tag}"
        self.env = {
            **os.environ,
            "HEADWATER_HOME": str(home),
            "HEADWATER_BUS_URL": f"{NATS}?partitions=4&topic={self.topic}",
            "HEADWATER_ONLINE_URL": f"{REDIS}?prefix={self.prefix}",
            "HEADWATER_DEDUPE_URL": f"{REDIS}?prefix={self.prefix}",
            "HEADWATER_CONTROL_URL": f"{POSTGRES}/{self.database}",
            "HEADWATER_ERASURE_KEY": secrets.token_hex(32),
            "HEADWATER_ERASURE_CHASE": "2s",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = home / "logs"
        self.logs.mkdir(parents=True)

    def start(self, name: str, *args: str) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [*HEADWATER, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*HEADWATER, *args], env=self.env, capture_output=True, text=True, check=True
        )
        return done.stdout

    def stop(self) -> dict[str, int | None]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = None
        return codes


def create_database(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{POSTGRES}/test", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def _redis_keys_holding(prefix: str, needle: str) -> list[str]:
    """The keys under ``prefix`` whose name or value holds ``needle``: the byte-scan
    test's own scan of every key and value."""
    import redis

    client = redis.Redis.from_url(REDIS)
    try:
        return scan_redis(client, prefix, [needle]).get(needle, [])
    finally:
        client.close()


def drop_everything(run: Run) -> None:
    import psycopg
    import redis

    with psycopg.connect(f"{POSTGRES}/test", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{run.database}" WITH (FORCE)')
    client = redis.Redis.from_url(REDIS)
    for key in client.scan_iter(match=f"{run.prefix}*", count=1000):
        client.delete(key)
    client.close()
    delete_bus(run.env["HEADWATER_BUS_URL"])


def signals(n: int, users: int, now: datetime) -> list[dict[str, Any]]:
    kinds = ("view", "view", "view", "click", "save")
    return [
        {
            "event_id": f"op-{uuid.uuid4().hex}",
            "event_type": kinds[i % len(kinds)],
            "user_id": f"opu{i % users:04d}",
            "item_id": f"item-{(i * 7) % 997}",
            "surface": "web",
            "timestamp": (now - timedelta(seconds=n - i) / 100).isoformat(),
            "payload": {"action": "add"} if kinds[i % len(kinds)] == "save" else {},
        }
        for i in range(n)
    ]


def drive(run: Run, args: argparse.Namespace, gateways: list[str], key: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    now = datetime.now(UTC)
    events = signals(args.events, args.users, now)
    batches = [events[i : i + 500] for i in range(0, len(events), 500)]
    accepted: Counter[tuple[str, str]] = Counter()
    statuses: Counter[str] = Counter()
    resent = duplicates = 0
    with httpx.Client(headers=headers, timeout=60) as http:
        for i, batch in enumerate(batches):
            sent = http.post(f"{gateways[i % 2]}/v1/signals", json=batch)
            if sent.status_code not in (200, 207):
                raise SystemExit(f"publish: {sent.status_code} {sent.text[:500]}")
            answer = sent.json()
            for event, result in zip(batch, answer["results"], strict=True):
                statuses[result["status"]] += 1
                if result["status"] == "accepted":
                    accepted[event["user_id"], event["event_type"]] += 1
            if i % 5 == 0:
                again = http.post(f"{gateways[(i + 1) % 2]}/v1/signals", json=batch).json()
                resent += len(batch)
                duplicates += sum(r["status"] == "duplicate" for r in again["results"])
            if i == len(batches) // 2:
                run.procs["features-0"].kill()  # SIGKILL mid-load
                run.procs["features-0"].wait()
                run.start("features-2", "consume", "features")
        wrong = _wait_counts(http, gateways[0], accepted, args.users)
        erasure = _erase(run, http, gateways, f"opu{0:04d}", now)
    return {
        "events": args.events,
        "users": args.users,
        "statuses": dict(statuses),
        "resent": resent,
        "resent_duplicate": duplicates,
        "users_with_wrong_counts": wrong,
        "erasure": erasure,
    }


def _wait_counts(
    http: httpx.Client, gateway: str, accepted: Counter[tuple[str, str]], users: int
) -> int:
    """Users whose counts or window counts differ from what was accepted, once the
    consumers caught up (or after 120 s)."""
    expected: dict[str, dict[str, int]] = {}
    for (user, etype), n in accepted.items():
        expected.setdefault(user, {})[etype] = n
    ids = [f"opu{i:04d}" for i in range(users)]
    deadline = time.monotonic() + 120
    while True:
        wrong = 0
        for start in range(0, len(ids), 100):
            body = {"user_ids": ids[start : start + 100], "features": ["counts", "window_counts"]}
            rows = http.post(f"{gateway}/v1/features/batch", json=body).json()["users"]
            for row in rows:
                want = expected.get(row["user_id"], {})
                features = row.get("features") or {}
                windows = features.get("window_counts") or {}
                got = [features.get("counts") or {}, windows.get("1h", {}), windows.get("7d", {})]
                wrong += any({k: v for k, v in g.items() if v} != want for g in got)
        if wrong == 0 or time.monotonic() > deadline:
            return wrong
        time.sleep(1)


def _erase(
    run: Run, http: httpx.Client, gateways: list[str], user: str, now: datetime
) -> dict[str, Any]:
    # The scan must see the user before, so that none after means gone, not unread.
    before = len(_redis_keys_holding(run.prefix, user))
    started = time.monotonic()
    created = http.post(
        f"{gateways[0]}/v1/deletions", json={"user_id": user, "legal_basis": "gdpr-art17"}
    ).json()
    request = created["request_id"]
    deadline = time.monotonic() + 120
    audit: dict[str, Any] = {}
    while time.monotonic() < deadline:
        audit = http.get(f"{gateways[1]}/v1/deletions/{request}").json()
        if audit["status"] == "completed":
            break
        time.sleep(0.2)
    took = time.monotonic() - started
    late = signals(1, 1, now - timedelta(minutes=5))[0] | {"user_id": user}
    refused = []
    for gateway in gateways:
        late["event_id"] = f"op-late-{uuid.uuid4().hex}"
        result = http.post(f"{gateway}/v1/signals", json=[late]).json()["results"][0]
        refused.append(result.get("rule") or result["status"])
    return {
        "status": audit.get("status"),
        "seconds": round(took, 1),
        "stores": {s["participant"]: s["status"] for s in audit.get("stores", [])},
        "redis_keys_holding_user_id_before": before,
        "redis_keys_holding_user_id": len(_redis_keys_holding(run.prefix, user)),
        "late_event_answers": refused,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--users", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hw-operator-") as tmp:
        run = Run(Path(tmp))
        create_database(run.database)
        figures: dict[str, Any] = {}
        try:
            run.cli("contracts", "apply", "src/headwater/contract/defaults/")
            printed = run.cli(
                "keys",
                "create",
                "operator-run",
                "--service",
                "--all-event-types",
                *[a for r in ("producer", "reader", "privacy", "operator") for a in ("--role", r)],
            )
            key = next(w for w in printed.split() if w.startswith("hwk_"))
            ports = [free_port(), free_port()]
            gateways = [f"http://127.0.0.1:{p}" for p in ports]
            for i, port in enumerate(ports):
                run.start(f"gateway-{i}", "serve", "--port", str(port))
            for i, name in enumerate(CONSUMERS):
                run.start(f"{name}-{i}" if name == "features" else name, "consume", name)
            run.start("orchestrate", "orchestrate")
            for i, port in enumerate(ports):
                if not answers_health(run.procs[f"gateway-{i}"], port, 60):
                    log = (run.logs / f"gateway-{i}.log").read_text()[-2000:]
                    raise SystemExit(f"gateway-{i} did not start:\n{log}")
            figures = drive(run, args, gateways, key)
        finally:
            codes = run.stop()
            figures["exit_codes"] = {n: c for n, c in codes.items() if n != "features-0"}
            figures["killed"] = {"features-0": codes.get("features-0")}
            figures["gateways_logged_stopped"] = [
                "gateway stopped" in (run.logs / f"gateway-{i}.log").read_text() for i in (0, 1)
            ]
            drop_everything(run)
    erasure = figures.get("erasure", {})
    checks = {
        "every resent event duplicate": figures.get("resent_duplicate") == figures.get("resent"),
        "counts equal what was accepted": figures.get("users_with_wrong_counts") == 0,
        "erasure completed": erasure.get("status") == "completed",
        "user id in Redis before, nowhere after": erasure.get(
            "redis_keys_holding_user_id_before", 0
        )
        > 0
        and erasure.get("redis_keys_holding_user_id") == 0,
        "late event refused by both gateways": erasure.get("late_event_answers")
        == ["user_erased", "user_erased"],
        # uvicorn raises the SIGTERM it took again once it has shut down (a clean stop
        # for systemd): a gateway ends with -15 after logging that it stopped.
        "every gateway stopped": figures["gateways_logged_stopped"] == [True, True]
        and all(
            c in (0, -signal.SIGTERM) for n, c in figures["exit_codes"].items() if "gateway" in n
        ),
        "every consumer exited 0": all(
            c == 0 for n, c in figures["exit_codes"].items() if "gateway" not in n
        ),
    }
    figures["checks"] = checks
    emit("operator_run", figures)
    if not all(checks.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

"""A real Prometheus (Debian's package) scrapes a running ``headwater up`` with the shipped
rules: the recording rules produce values, and a stalled feature consumer fires the
freshness alert of the team whose events wait, which resolves once the consumer catches up.

The stall: another process holds the online store's write lock (as a long maintenance
transaction would), so the feature consumer cannot commit while producers keep
publishing through the gateway.
"""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import yaml

from headwater.access.keys import ApiKeys
from headwater.config import Settings
from headwater.contract.loader import default_definitions
from headwater.control import open_control_database
from headwater.registry.contracts import ContractRegistry
from tests._live import free_port
from tests.deploy.conftest import RULES, SCRAPE_CONFIG, rules

pytestmark = pytest.mark.slow

_T = TypeVar("_T")
BURN_FAST = "HeadwaterFreshnessBudgetBurnFast"


@dataclass
class RunningStack:
    url: str
    home: Path
    producer: str
    operator: str


@dataclass
class Publisher:
    """Publishes ``view`` events of team ``web`` until stopped; keeps every failure."""

    url: str
    key: str
    stop: threading.Event = field(default_factory=threading.Event)
    accepted: int = 0
    failures: list[str] = field(default_factory=list)

    def run(self) -> None:
        ids = itertools.count()
        with httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=10
        ) as http:
            while not self.stop.wait(0.1):
                now = datetime.now(UTC).isoformat()
                batch = [
                    {
                        "event_id": f"e2e-{n}",
                        "event_type": "view",
                        "user_id": f"user-{n % 50}",
                        "item_id": f"item-{n % 7}",
                        "surface": "web",
                        "timestamp": now,
                        "payload": {"dwell_ms": 100},
                    }
                    for n in itertools.islice(ids, 20)
                ]
                try:
                    answer = http.post("/v1/signals", json=batch)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if answer.status_code == 200:
                    self.accepted += len(batch)
                else:
                    self.failures.append(f"{answer.status_code}: {answer.text[:200]}")


def wait_for(check: Callable[[], _T | None], timeout: float, what: str) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.5)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    home = tmp_path / "hw"
    db = open_control_database(Settings.from_env(home).control_url)
    ContractRegistry(db).apply(default_definitions())
    producer, _ = ApiKeys(db).create("web", roles=("producer",))
    operator, _ = ApiKeys(db).create("sre", roles=("operator",))
    db.close()
    port = free_port()
    log = tmp_path / "up.log"
    env = {**os.environ, "HEADWATER_HOME": str(home), "HEADWATER_BATCH_SCHEDULE": "off"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "headwater", "up", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/v1/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, "headwater up answers")
        yield RunningStack(url, home, producer, operator)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def prometheus_url(prometheus: str, stack: RunningStack, tmp_path: Path) -> Iterator[str]:
    """Prometheus on the shipped configuration and rules, scraping the stack each second
    with an operator key and evaluating the rules each second."""
    key_file = tmp_path / "operator.key"
    key_file.write_text(stack.operator)
    key_file.chmod(0o600)
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    (job,) = config["scrape_configs"]
    job["authorization"]["credentials_file"] = str(key_file)
    job["static_configs"] = [{"targets": [stack.url.removeprefix("http://")]}]
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 60, "Prometheus is ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def query(prometheus: str, expr: str) -> dict[frozenset[tuple[str, str]], float]:
    """The instant vector of ``expr`` now, by label set."""
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
    answer.raise_for_status()
    return {
        frozenset(r["metric"].items()): float(r["value"][1])
        for r in answer.json()["data"]["result"]
    }


def alerts(prometheus: str, name: str, state: str) -> list[dict[str, str]]:
    """The labels of each alert ``name`` now in ``state`` (pending or firing)."""
    answer = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5)
    answer.raise_for_status()
    return [
        a["labels"]
        for a in answer.json()["data"]["alerts"]
        if a["labels"]["alertname"] == name and a["state"] == state
    ]


def one_value(prometheus: str, expr: str) -> float | None:
    found = query(prometheus, expr)
    assert len(found) <= 1, found
    return next(iter(found.values()), None)


def has_value(prometheus: str, expr: str) -> Callable[[], bool]:
    """Whether ``expr`` has at least one series now."""
    return lambda: bool(query(prometheus, expr))


def test_prometheus_scrapes_the_stack_and_a_stalled_consumer_fires_the_freshness_alert(
    stack: RunningStack, prometheus_url: str
) -> None:
    prom = prometheus_url
    # The bearer key works: the target is up (a 401 or 403 would make it 0).
    wait_for(lambda: one_value(prom, 'up{job="headwater"}') == 1, 30, "target up")
    publisher = Publisher(stack.url, stack.producer)
    sending = threading.Thread(target=publisher.run, daemon=True)
    sending.start()
    try:
        web_view = '{producer="web",event_type="view"}'
        # One event the contract rejects, so the rejection rate has a series too.
        rejected = httpx.post(
            f"{stack.url}/v1/signals",
            json=[{"event_id": "e2e-bad", "event_type": "view", "user_id": "u"}],
            headers={"Authorization": f"Bearer {stack.producer}"},
        )
        assert rejected.status_code == 207, rejected.text
        # Every recording rule produces a value.
        recorded = [r["record"] for r in rules() if "record" in r]
        assert recorded
        for record in recorded:
            wait_for(has_value(prom, record), 30, f"a value of {record}")
        for expr in (
            f"headwater:freshness_slo_errors:ratio_rate5m{web_view}",
            f"headwater:freshness_slo_burn_rate:1h{web_view}",
            f"headwater:events_accepted:rate5m{web_view} > 0",
            'headwater:freshness_seconds:p99_5m{event_type="view"} > 0',
            'headwater:consumer_lag_events:sum{group="features"}',
            'headwater:consumer_lag_seconds:max{group="features"}',
            "headwater:publish_seconds:p99_5m > 0",
        ):
            wait_for(has_value(prom, expr), 30, f"a value of {expr}")
        assert one_value(prom, "headwater:http_5xx:ratio_rate5m") == 0
        # Healthy for a while: the budget does not burn, nothing fires.
        time.sleep(10)
        healthy = one_value(prom, f"headwater:freshness_slo_errors:ratio_rate5m{web_view}")
        assert healthy is not None
        assert healthy < 0.144
        assert not alerts(prom, BURN_FAST, "firing")
        assert not alerts(prom, BURN_FAST, "pending")
        accepted_before = one_value(prom, f"sum(headwater_events_accepted_total{web_view})")
        assert accepted_before

        lock = sqlite3.connect(stack.home / "online.db", timeout=10, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")  # the feature consumer's commits now wait
            fired = wait_for(
                lambda: alerts(prom, BURN_FAST, "firing"), 45, "the freshness alert fires"
            )
            # Publishing went on meanwhile: the gateway accepted more than it had.
            accepted_during = one_value(prom, f"sum(headwater_events_accepted_total{web_view})")
            # The lag the scrapes see grows while the consumer cannot commit (the recording
            # rule's value is at most one scrape and one evaluation old: waited for).
            lag_expr = 'headwater:consumer_lag_events:sum{group="features"}'
            wait_for(
                lambda: (one_value(prom, lag_expr) or 0) > 0,
                15,
                "the stalled group's lag shows at the scrape",
            )
            lag = one_value(prom, lag_expr)
        finally:
            if lock.in_transaction:
                lock.execute("ROLLBACK")
            lock.close()
        assert [(a["producer"], a["event_type"], a["severity"]) for a in fired] == [
            ("web", "view", "page")
        ]
        assert accepted_during is not None
        assert accepted_during > accepted_before
        assert lag is not None
        assert lag > 0, "the stalled group's lag shows at the scrape"
        # The consumer commits what waited, within the budget: the burn stops.
        wait_for(lambda: not alerts(prom, BURN_FAST, "firing"), 60, "the freshness alert resolves")
    finally:
        publisher.stop.set()
        sending.join(15)
    assert publisher.failures == [], publisher.failures[:5]
    assert publisher.accepted > 0

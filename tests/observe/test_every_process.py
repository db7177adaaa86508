"""Every metric from every process: one scrape of ``headwater up --processes`` shows the
histograms and counters each process keeps, and a process run on its own serves its
metrics on a port of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from headwater.access.keys import ApiKeys
from headwater.application import Application
from headwater.config import Settings
from headwater.contract.loader import default_definitions
from headwater.control import open_control_database
from headwater.registry.contracts import ContractRegistry
from headwater.supervisor import Supervisor
from tests._live import free_port
from tests.erasure.test_end_to_end import events, wait_for


def _keys(home: Path) -> tuple[str, str]:
    """A producer/privacy key and an operator key, on contracts already registered."""
    db = open_control_database(Settings.from_env(home).control_url)
    ContractRegistry(db).apply(default_definitions())
    web, _ = ApiKeys(db).create("web", roles=("producer", "reader", "privacy"))
    operator, _ = ApiKeys(db).create("sre", roles=("operator",))
    db.close()
    return web, operator


def _scrape(url: str, key: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape: (name, sorted labels) -> value."""
    answer = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _serve_own_port(args: list[str], home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HEADWATER_HOME": str(home)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.Popen(
        [sys.executable, "-m", "headwater", *args, "--metrics-port", str(port)], env=env
    )


@pytest.fixture
def supervisor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Supervisor]:
    # The processes read these from their environment: a batch every few seconds, and
    # every store chased (and alerted) as soon as it has not confirmed.
    monkeypatch.setenv("HEADWATER_BATCH_SCHEDULE", "every 3s")
    monkeypatch.setenv("HEADWATER_ERASURE_CHASE", "1ms")
    monkeypatch.setenv("HEADWATER_DASHBOARD_SAMPLE", "1s")
    sup = Supervisor(Settings.from_env(tmp_path / "hw"), port=free_port())
    yield sup
    sup.stop()


def test_one_scrape_of_up_processes_shows_every_process(supervisor: Supervisor) -> None:
    sup = supervisor
    web, operator = _keys(sup.settings.home)
    stale = sup.metrics_dir / "histogram_1.db"  # an earlier run's file must not count
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not a metrics file")
    sup.start()
    assert not stale.exists()
    assert set(sup.children) >= {"features", "orchestrator", "batch", "gateway"}
    metrics = f"{sup.url}/metrics"
    pids = {name: proc.pid for name, proc in sup.children.items() if proc is not None}

    with httpx.Client(base_url=sup.url, headers={"Authorization": f"Bearer {web}"}) as http:
        assert http.post("/v1/signals", json=events("ann", 10)).status_code == 200

        def readable() -> bool:
            body = http.get("/v1/users/ann/features").json()
            return bool(body["found"]) and body["features"]["counts"].get("view") == 10

        wait_for(readable)
        # Freshness: recorded by the feature consumer's process.
        samples = wait_for(
            lambda: (
                (s := _scrape(metrics, operator))
                and _value(s, "headwater_freshness_seconds_count", event_type="view") >= 10
                and s
            )
        )
        assert _value(samples, "headwater_publish_seconds_count") >= 1  # the gateway's own
        # The freshness SLO's counter (the alert rules' input), from the consumer's process.
        readable_views = sum(
            v
            for (name, labels), v in samples.items()
            if name == "headwater_freshness_events_total" and ("event_type", "view") in labels
        )
        assert readable_views >= 10
        # The dashboard's hour, sampled by the gateway: freshness from the consumer's files.
        trends = f"{sup.url}/v1/dashboard/trends"

        def view_freshness() -> bool:
            doc = httpx.get(trends, headers={"Authorization": f"Bearer {operator}"}).json()
            p50 = doc["freshness"].get("view", {}).get("p50", [])
            return any(v is not None for v in p50)

        wait_for(view_freshness)

        # An erasure: one participant stopped, so the orchestrator alerts about it.
        batch_erasure = sup.children["batch-erasure"]
        assert batch_erasure is not None
        os.kill(batch_erasure.pid, signal.SIGSTOP)
        try:
            created = http.post(
                "/v1/deletions", json={"user_id": "ann", "legal_basis": "account-closed"}
            )
            assert created.status_code == 202, created.text
            wait_for(
                lambda: (
                    _value(
                        _scrape(metrics, operator),
                        "headwater_erasure_alerts_total",
                        participant="batch-derived",
                    )
                    >= 1
                )
            )
        finally:
            os.kill(batch_erasure.pid, signal.SIGCONT)
        request_id = created.json()["request_id"]
        wait_for(
            lambda: http.get(f"/v1/deletions/{request_id}").json()["status"] == "completed",
            timeout=90,
        )

    # Time to confirm per participant: the orchestrator's; batch runs: the scheduler's.
    samples = wait_for(
        lambda: (
            (s := _scrape(metrics, operator))
            and _value(s, "headwater_batch_run_seconds_count") >= 1
            and s
        ),
        timeout=60,
    )
    for participant in ("online-features", "archive", "batch-derived"):
        assert (
            _value(samples, "headwater_erasure_confirm_seconds_count", participant=participant) == 1
        ), participant
    # Each sample comes from the files of the process that recorded it.
    files = {p.name for p in sup.metrics_dir.iterdir()}
    assert f"histogram_{pids['orchestrator']}.db" in files
    assert f"histogram_{pids['batch']}.db" in files
    assert f"counter_{pids['orchestrator']}.db" in files
    assert any(
        f.startswith(f"batch_histogram_headwater_freshness_seconds_{pids['features']}_")
        for f in files
    )


def test_a_restarted_process_keeps_its_totals_and_loses_its_live_gauges(
    supervisor: Supervisor,
) -> None:
    sup = supervisor
    web, operator = _keys(sup.settings.home)
    sup.start()
    metrics = f"{sup.url}/metrics"
    with httpx.Client(base_url=sup.url, headers={"Authorization": f"Bearer {web}"}) as http:
        assert http.post("/v1/signals", json=events("bob", 7)).status_code == 200
        wait_for(
            lambda: (
                _value(
                    _scrape(metrics, operator),
                    "headwater_freshness_seconds_count",
                    event_type="view",
                )
                == 7
            )
        )
        features = sup.children["features"]
        assert features is not None
        live_gauge = sup.metrics_dir / f"gauge_livemax_{features.pid}.db"
        live_gauge.write_bytes(b"")  # as a live gauge of the consumer would leave it
        os.kill(features.pid, signal.SIGKILL)
        features.wait()
        wait_for(lambda: "features" in sup.check(), timeout=10)
        assert not live_gauge.exists()
        assert http.post("/v1/signals", json=events("bob", 3, start=7)).status_code == 200
        wait_for(
            lambda: (
                _value(
                    _scrape(metrics, operator),
                    "headwater_freshness_seconds_count",
                    event_type="view",
                )
                == 10
            )
        )


def test_a_consumer_on_its_own_serves_its_metrics(tmp_path: Path) -> None:
    home = tmp_path / "hw"
    web, operator = _keys(home)
    port = free_port()
    proc = _serve_own_port(["consume", "features"], home, port)
    url = f"http://127.0.0.1:{port}/metrics"
    try:

        def answers() -> bool:
            try:
                httpx.get(url, timeout=1)
            except httpx.HTTPError:
                assert proc.poll() is None, "the consumer exited"
                return False
            return True

        wait_for(answers, timeout=60)
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(url, headers={"Authorization": f"Bearer {web}"}).status_code == 403
        assert httpx.get(url.replace("/metrics", "/other")).status_code == 404

        with Application(Settings.from_env(home)) as app:
            key = app.keys.authenticate(web)
            result = app.ingestor.ingest(json.dumps(events("cid", 4)).encode(), key)
            assert result.accepted == 4, result
        wait_for(
            lambda: (
                _value(
                    _scrape(url, operator), "headwater_freshness_seconds_count", event_type="view"
                )
                == 4
            )
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("args", "env_vars", "metric", "labels"),
    [
        (
            ["orchestrate", "--interval", "0.2"],
            {"HEADWATER_ERASURE_CHASE": "1ms"},
            "headwater_erasure_alerts_total",
            {"participant": "online-features"},
        ),
        (
            ["batch", "schedule"],
            {"HEADWATER_BATCH_SCHEDULE": "every 1s"},
            "headwater_batch_run_seconds_count",
            {},
        ),
    ],
    ids=["orchestrate", "batch-schedule"],
)
def test_the_orchestrator_and_the_batch_serve_their_own_metrics(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env_vars: dict[str, str],
    metric: str,
    labels: dict[str, str],
) -> None:
    for name, value in env_vars.items():  # the request's due time is set where it is made
        monkeypatch.setenv(name, value)
    home = tmp_path / "hw"
    _, operator = _keys(home)
    port = free_port()
    proc = _serve_own_port(args, home, port)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        if args[0] == "orchestrate":  # a request no store confirms: the stores are chased
            with Application(Settings.from_env(home)) as app:
                app.orchestrator.request("zed", legal_basis="account-closed", requested_by="t")

        def recorded() -> bool:
            assert proc.poll() is None, f"{args} exited"
            try:
                return _value(_scrape(url, operator), metric, **labels) >= 1
            except httpx.HTTPError:
                return False

        wait_for(recorded, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_embedded_stack_serves_every_metric_from_its_one_process(tmp_path: Path) -> None:
    from headwater.stack import EmbeddedStack

    home = tmp_path / "hw"
    web, operator = _keys(home)
    stack = EmbeddedStack(Settings.from_env(home), port=free_port(), orchestrator_interval_s=0.1)
    stack.start()
    metrics = f"{stack.url}/metrics"
    try:
        before = _scrape(metrics, operator)
        with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {web}"}) as http:
            assert http.post("/v1/signals", json=events("dee", 6)).status_code == 200
            created = http.post(
                "/v1/deletions", json={"user_id": "dee", "legal_basis": "account-closed"}
            )
            assert created.status_code == 202, created.text
            request_id = created.json()["request_id"]
            wait_for(
                lambda: http.get(f"/v1/deletions/{request_id}").json()["status"] == "completed",
                timeout=90,
            )
        stack.app.open_batch_runner().run()
        after = _scrape(metrics, operator)

        def grew(name: str, **labels: str) -> float:
            return _value(after, name, **labels) - _value(before, name, **labels)

        assert grew("headwater_freshness_seconds_count", event_type="view") == 6
        assert grew("headwater_erasure_confirm_seconds_count", participant="archive") == 1
        assert grew("headwater_batch_run_seconds_count") >= 1
        assert grew("headwater_publish_seconds_count") == 1
    finally:
        stack.stop()

"""The dashboard's data: the sampled hour (rates, quantiles, bounds, the sampling clock)
and the present (computed once for every tab, open erasures first, no user data)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from fastapi.testclient import TestClient
from prometheus_client import Metric
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from headwater.application import Application
from headwater.batch.state import BatchState
from headwater.config import Settings
from headwater.erasure.events import Confirmation
from headwater.erasure.records import Participant
from headwater.gateway.app import create_app
from headwater.gateway.dashboard_view import COMPLETED_SHOWN, LiveView
from headwater.gateway.trends import (
    MAX_SERIES,
    ResponseCounts,
    TrendRing,
    histogram_quantile,
)
from tests._gateway_fixtures import auth, hw, make_key

__all__ = ["hw"]

INF = math.inf


class Counters:
    """Metric families as a process would expose them, moved by the test."""

    def __init__(self) -> None:
        self.accepted: dict[str, float] = {}
        self.rejected: dict[str, float] = {}
        self.publish: list[tuple[str, float]] = [("0.01", 0), ("0.1", 0), ("+Inf", 0)]
        self.freshness: dict[str, list[tuple[str, float]]] = {}

    def __call__(self) -> Iterable[Metric]:
        acc = CounterMetricFamily(
            "headwater_events_accepted", "", labels=["producer", "event_type"]
        )
        for team, n in self.accepted.items():
            acc.add_metric([team, "view"], n)
        rej = CounterMetricFamily(
            "headwater_events_rejected", "", labels=["producer", "event_type", "reason"]
        )
        for team, n in self.rejected.items():
            rej.add_metric([team, "view", "schema"], n)
        pub = HistogramMetricFamily("headwater_publish_seconds", "")
        pub.add_metric([], self.publish, sum_value=0)
        fresh = HistogramMetricFamily("headwater_freshness_seconds", "", labels=["event_type"])
        for etype, buckets in self.freshness.items():
            fresh.add_metric([etype], buckets, sum_value=0)
        return [acc, rej, pub, fresh]


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = {0.1: 50.0, 0.5: 100.0, INF: 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.1 + 0.4 * 49 / 50)
    # A rank in the open last bucket answers the highest finite bound.
    assert histogram_quantile(0.99, {0.1: 10.0, INF: 20.0}) == pytest.approx(0.1)
    assert histogram_quantile(0.5, {0.1: 0.0, INF: 0.0}) is None
    assert histogram_quantile(0.5, {}) is None


def test_a_sample_holds_rates_quantiles_levels_and_429_503(hw: Application) -> None:
    counters = Counters()
    responses = ResponseCounts()
    counters.accepted = {"web": 1000.0, "ios": 10.0}
    counters.rejected = {"web": 5.0}
    ring = TrendRing(hw, interval_s=10, responses=responses, metrics=counters)
    assert json.loads(ring.encoded()[0])["t"] == []  # nothing sampled before the first tick
    first = ring.sample()
    assert first.ingest == {"web": (0.0, 0.0), "ios": (0.0, 0.0)}  # no interval yet: no rate
    t0 = first.t

    counters.accepted = {"web": 1500.0, "ios": 10.0}
    counters.rejected = {"web": 25.0, "android": 10.0}
    counters.publish = [("0.01", 90), ("0.1", 100), ("+Inf", 100)]
    counters.freshness = {"click": [("0.5", 50), ("1", 100), ("+Inf", 100)]}
    for status in [429] * 30 + [503] * 5 + [200] * 7:
        responses.add(status)
    point = ring.sample(now=t0 + 10)
    assert point.ingest == {"web": (50.0, 2.0), "ios": (0.0, 0.0), "android": (0.0, 1.0)}
    assert point.responses == (3.0, 0.5)
    p50, p99, batches = point.publish
    assert p50 == pytest.approx(0.01 * 50 / 90, abs=1e-4)
    assert p99 == pytest.approx(0.01 + 0.09 * 9 / 10, abs=1e-4)
    assert batches == 10.0
    # A type that first shows up had no readable events at the earlier reading: its
    # whole histogram is this interval's.
    assert point.freshness == {"click": (0.5, 0.99)}
    # Every consumer group has a row, and the erasure levels are read.
    assert set(point.lag) == set(hw.lag_groups)
    assert point.erasures == (0, 0)

    counters.freshness = {"click": [("0.5", 100), ("1", 200), ("+Inf", 200)]}
    counters.accepted = {"web": 10.0}  # the counting process restarted
    point = ring.sample(now=t0 + 20)
    assert point.freshness["click"] == (0.5, pytest.approx(0.99, abs=1e-4))
    assert point.ingest["web"] == (1.0, 0.0)  # counted from zero, never negative
    assert point.responses == (0.0, 0.0)

    body, etag = ring.encoded()
    doc = json.loads(body)
    assert doc["t"] == [t0, t0 + 10, t0 + 20]
    assert doc["ingest"]["web"]["accepted"] == [0.0, 50.0, 1.0]
    assert doc["ingest"]["android"]["rejected"] == [None, 1.0, 0.0]
    assert doc["freshness"]["click"]["p50"] == [None, 0.5, 0.5]
    assert doc["responses"]["429"] == [0.0, 3.0, 0.0]
    assert doc["erasures"]["open"] == [0, 0, 0]
    assert etag == '"3"'


def test_the_ring_is_bounded_in_points_and_series(hw: Application) -> None:
    counters = Counters()
    ring = TrendRing(hw, interval_s=10, metrics=counters)
    assert ring.capacity == 360  # one hour
    start = ring.sample().t
    counters.accepted = {f"team-{i:03d}": float(i) for i in range(3 * MAX_SERIES)}
    for i in range(1, 400):
        ring.sample(now=start + 10 * i)
    assert len(ring.points) == 360
    assert ring.points[0].t == start + 10 * 40
    assert len(ring.points[-1].ingest) == MAX_SERIES
    doc = json.loads(ring.encoded()[0])
    assert len(doc["t"]) == 360
    assert len(doc["ingest"]) == MAX_SERIES
    # A short interval never keeps more than the ceiling.
    assert TrendRing(hw, interval_s=0.1, metrics=counters).capacity == 3600


def test_lag_erasures_and_batch_runs_come_from_the_backends(hw: Application) -> None:
    with TestClient(create_app(hw)) as client:
        web = make_key(hw, "web", "producer")
        ring = TrendRing(hw, interval_s=10)
        ring.sample()
        events = [
            {
                "event_id": f"e-trend-{i}",
                "event_type": "view",
                "user_id": f"u{i}",
                "item_id": "i1",
                "surface": "web",
                "timestamp": datetime.now(UTC).isoformat(),
                "payload": {},
            }
            for i in range(7)
        ]
        assert client.post("/v1/signals", json=events, headers=auth(web)).status_code == 200
        hw.orchestrator.request("u1", legal_basis="gdpr-art17", requested_by="test")
        state = BatchState(hw.control)
        run = state.start_run("nightly", host="batch-1")
        state.finish_run(
            run, status="succeeded", days=["2026-12-01"], as_of=None, archive_version=3, detail={}
        )
        point = ring.sample(now=ring.points[-1].t + 10)
        # A tab that already has the latest sample is told so, without a body.
        operator = auth(make_key(hw, "sre", "operator"))
        first = client.get("/v1/dashboard/trends", headers=operator)
        assert first.status_code == 200
        tag = first.headers["etag"]
        same = client.get("/v1/dashboard/trends", headers={**operator, "If-None-Match": tag})
        assert same.status_code == 304
        assert same.content == b""
        client.app.state.trends.sample()  # type: ignore[attr-defined]
        fresh = client.get("/v1/dashboard/trends", headers={**operator, "If-None-Match": tag})
        assert fresh.status_code == 200
        assert fresh.headers["etag"] != tag
    # No consumer runs here: every group is behind by the seven events (and the erasure).
    assert point.lag["features"][0] == 8
    assert point.ingest["web"][0] == pytest.approx(0.7)
    assert point.erasures == (1, 0)
    doc = json.loads(ring.encoded()[0])
    assert doc["batch_runs"][0]["id"] == run
    assert doc["batch_runs"][0]["status"] == "succeeded"
    assert doc["batch_runs"][0]["days"] == 1


def test_the_ring_samples_on_its_clock_however_many_tabs_ask(tmp_path: Path) -> None:
    settings = msgspec.structs.replace(Settings.from_env(tmp_path / "hw"), dashboard_sample_s=0.25)
    app = Application(settings)
    app.register_shipped_contracts()
    operator = make_key(app, "sre", "operator")
    try:
        with TestClient(create_app(app)) as client:
            assert client.get("/v1/dashboard/trends").status_code == 401
            assert (
                client.get(
                    "/v1/dashboard/trends", headers=auth(make_key(app, "web", "producer"))
                ).status_code
                == 403
            )
            started = time.monotonic()
            first = client.get("/v1/dashboard/trends", headers=auth(operator))
            assert first.status_code == 200
            for _ in range(200):  # many tabs asking do not add samples
                client.get("/v1/dashboard/trends", headers=auth(operator))
            time.sleep(max(0.0, 1.5 - (time.monotonic() - started)))
            ring: TrendRing = client.app.state.trends  # type: ignore[attr-defined]
            n = len(ring.points)
            elapsed = time.monotonic() - started
            assert 1 + (elapsed / 0.25) * 0.5 <= n <= 2 + elapsed / 0.25
            last = client.get("/v1/dashboard/trends", headers=auth(operator))
            assert last.headers["etag"] != first.headers["etag"]
            assert len(last.json()["t"]) >= n
        assert ring._thread is None  # the app's shutdown stopped the sampling
    finally:
        app.close()


@pytest.fixture
def ledger_requests(hw: Application) -> tuple[list[str], str]:
    """Eight completed requests and one open one with an outstanding store."""
    now = datetime.now(UTC)
    stores = [Participant("features", "online", 60), Participant("archive", "delta", 60)]
    completed = []
    for i in range(8):
        rid = f"er_done_{i}"
        hw.ledger.create(
            request_id=rid,
            subject_hash=f"h{i}",
            user_id=f"person-{i}@example.com",
            legal_basis="gdpr-art17",
            received_at=now - timedelta(minutes=20 - i),
            deadline=now + timedelta(days=30),
            participants=stores,
        )
        for p in stores:
            hw.ledger.confirm(
                Confirmation(
                    request_id=rid,
                    participant=p.name,
                    store=p.store,
                    method="delete",
                    rows_removed=3,
                    rows_remaining=0,
                    verified_at=now,
                )
            )
        hw.ledger.complete(rid, now - timedelta(minutes=10 - i))
        completed.append(rid)
    hw.ledger.create(
        request_id="er_open",
        subject_hash="hopen",
        user_id="still-here@example.com",
        legal_basis="gdpr-art17",
        received_at=now - timedelta(hours=1),
        deadline=now + timedelta(days=29),
        participants=stores,
    )
    hw.ledger.confirm(
        Confirmation(
            request_id="er_open",
            participant="features",
            store="online",
            method="delete",
            rows_removed=1,
            rows_remaining=0,
            verified_at=now,
        )
    )
    return completed, "er_open"


def test_the_present_is_computed_once_for_every_tab_and_open_requests_come_first(
    hw: Application, ledger_requests: tuple[list[str], str]
) -> None:
    completed, open_id = ledger_requests
    operator = make_key(hw, "sre", "operator")
    with TestClient(create_app(hw)) as client:
        view: LiveView = client.app.state.live_view  # type: ignore[attr-defined]
        assert client.get("/v1/dashboard/live").status_code == 401
        answers = [client.get("/v1/dashboard/live", headers=auth(operator)) for _ in range(10)]
        assert {a.status_code for a in answers} == {200}
        assert view.computed == 1  # ten tabs within two seconds: the backends read once
        assert len({a.content for a in answers}) == 1
        time.sleep(view.ttl_s)
        doc = client.get("/v1/dashboard/live", headers=auth(operator)).json()
        assert view.computed == 2
    deletions = doc["deletions"]
    assert [r["request_id"] for r in deletions["open"]] == [open_id]
    stores = {s["participant"]: s["status"] for s in deletions["open"][0]["stores"]}
    assert stores == {"archive": "pending", "features": "confirmed"}
    # The latest completed, newest first, one line each: they cannot crowd the open out.
    assert [r["request_id"] for r in deletions["completed"]] == completed[::-1][:COMPLETED_SHOWN]
    assert all(r["confirmed"] == r["stores"] == 2 for r in deletions["completed"])
    assert deletions["counts"]["completed"] == 8
    assert deletions["counts"]["open"] == 1
    assert set(doc) == {"at", "ingestion", "slo", "consumers", "deletions", "features"}
    # No user id reaches the page.
    assert "@example.com" not in json.dumps(doc)

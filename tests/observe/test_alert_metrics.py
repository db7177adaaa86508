"""The metrics the shipped alert rules are written on (``deploy/prometheus/``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from headwater.application import Application
from headwater.erasure.records import ErasureBacklog
from headwater.slo import SloRecorder
from tests._gateway_fixtures import auth, make_key
from tests.observe.test_observability import drain, event


def samples(client: TestClient, key: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of one scrape, by name and labels."""
    text = client.get("/metrics", headers=auth(key)).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(
    scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def test_readable_events_are_counted_per_team_and_type_within_budget_or_not(
    client: TestClient, hw: Application, web_key: str
) -> None:
    operator = make_key(hw, "sre", "operator")
    runtime = hw.consumer("features", batch_size=100)
    before = samples(client, operator)
    published = client.post(
        "/v1/signals", json=[event(i) for i in range(100, 112)], headers=auth(web_key)
    )
    assert published.status_code == 200, published.text
    drain(runtime)
    after = samples(client, operator)
    runtime.close()

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    good = {"producer": "web", "event_type": "view", "within_budget": "true"}
    assert grew("headwater_freshness_events_total", **good) == 12
    assert grew("headwater_events_accepted_total", producer="web", event_type="view") == 12
    # Events readable later than the type's budget count as outside it.
    recorder = SloRecorder(lambda: {"click": 1.0})
    recorder.observe("ios", "click", 0.5, 0.0, count=3)
    recorder.observe("ios", "click", 2.0, 0.0, count=2)
    final = samples(client, operator)
    late = {"producer": "ios", "event_type": "click"}
    name = "headwater_freshness_events_total"
    # The counters are the process's: other tests may have counted ios clicks before.
    for within, n in (("true", 3), ("false", 2)):
        got = sample(final, name, **late, within_budget=within)
        assert got - sample(after, name, **late, within_budget=within) == n


def test_answers_are_counted_per_route_template_method_and_status(
    client: TestClient, hw: Application
) -> None:
    operator = make_key(hw, "sre", "operator")
    reader = make_key(hw, "recs", "reader")
    before = samples(client, operator)
    assert client.get("/v1/users/ann/features").status_code == 401
    assert client.get("/v1/users/bob/features", headers=auth(reader)).status_code == 200
    assert client.get("/no/such/route").status_code == 404
    assert client.request("BREW", "/v1/users/ann/features").status_code == 405
    after = samples(client, operator)

    def grew(**labels: str) -> float:
        name = "headwater_http_requests_total"
        return sample(after, name, **labels) - sample(before, name, **labels)

    route = "/v1/users/{user_id}/features"
    assert grew(route=route, method="GET", status="401") == 1
    assert grew(route=route, method="GET", status="200") == 1
    assert grew(route="unmatched", method="GET", status="404") == 1
    # A method a caller invents adds no series of its own.
    assert grew(route=route, method="other", status="405") == 1
    # One series per route template: no user id ever becomes a label value.
    assert not any(
        "ann" in value or "bob" in value
        for (name, labels) in after
        if name == "headwater_http_requests_total"
        for _, value in labels
    )


def test_erasure_backlog_counts_requests_past_deadline_and_overdue_stores(
    client: TestClient, hw: Application
) -> None:
    operator = make_key(hw, "sre", "operator")
    # No consumer runs: the requests stay open and every expected store owes both.
    hw.orchestrator.request(
        "ann", legal_basis="consent-withdrawn", requested_by="privacy", deadline=timedelta(hours=1)
    )
    hw.orchestrator.request("bob", legal_basis="consent-withdrawn", requested_by="privacy")
    now = datetime.now(UTC)
    assert hw.ledger.backlog(now) == ErasureBacklog(past_deadline=0, overdue={})
    stores = {t.participant for t in hw.ledger.open_requests()[0].tasks}
    assert stores
    # Past the stores' confirm-by time (minutes): each owes two; past ann's deadline.
    assert hw.ledger.backlog(now + timedelta(minutes=30)) == ErasureBacklog(
        past_deadline=0, overdue=dict.fromkeys(stores, 2)
    )
    assert hw.ledger.backlog(now + timedelta(hours=2)).past_deadline == 1
    assert hw.ledger.backlog(now + timedelta(days=31)).past_deadline == 2
    scraped = samples(client, operator)
    assert sample(scraped, "headwater_erasure_requests_past_deadline") == 0
    assert ("headwater_erasure_requests_past_deadline", frozenset()) in scraped


def test_the_last_successful_batch_run_is_exported_per_kind(
    client: TestClient, hw: Application
) -> None:
    operator = make_key(hw, "sre", "operator")
    state = hw.batch_state
    name = "headwater_batch_last_success_timestamp_seconds"
    assert sample(samples(client, operator), name, kind="nightly") == 0.0
    detail: dict[str, Any] = {}
    ok = state.start_run("nightly")
    state.finish_run(ok, status="ok", days=[], as_of=None, archive_version=None, detail=detail)
    finished = datetime.now(UTC).timestamp()
    failed = state.start_run("nightly")
    state.finish_run(
        failed, status="failed", days=[], as_of=None, archive_version=None, detail=detail
    )
    at = sample(samples(client, operator), name, kind="nightly")
    assert finished - 5 < at <= finished
    assert sample(samples(client, operator), name, kind="backfill") == 0.0

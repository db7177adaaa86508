"""Metrics, request ids in JSON logs, ingestion stats and freshness SLOs with alerts."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from headwater.application import Application
from headwater.logs import JsonFormatter
from headwater.runtime import ConsumerRuntime
from headwater.slo import SloMonitor, SloRecorder, slo_report
from tests._gateway_fixtures import auth, make_key


def event(i: int, **over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_id": f"o-{i}",
        "event_type": "view",
        "user_id": f"u{i % 4}",
        "item_id": "i1",
        "surface": "web",
        "timestamp": datetime.now(UTC).isoformat(),
        "payload": {},
    }
    e.update(over)
    return e


def drain(runtime: ConsumerRuntime) -> None:
    while runtime.step():
        pass
    runtime.step()


def test_metrics_count_accepted_and_rejected_by_producer_type_reason(
    client: TestClient, hw: Application, web_key: str
) -> None:
    operator = make_key(hw, "sre", "operator")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=auth(web_key)).status_code == 403
    before = client.get("/metrics", headers=auth(operator)).text
    batch = [event(1), event(2), event(3, surface="tv"), event(4, event_type="nope")]
    assert client.post("/v1/signals", json=batch, headers=auth(web_key)).status_code == 207
    text = client.get("/metrics", headers=auth(operator)).text

    def value(line_start: str, body: str) -> float:
        for line in body.splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    accepted = 'headwater_events_accepted_total{event_type="view",producer="web"}'
    assert value(accepted, text) - value(accepted, before) == 2
    surface = (
        'headwater_events_rejected_total{event_type="view",producer="web",'
        'reason="surface_not_allowed"}'
    )
    assert value(surface, text) - value(surface, before) == 1
    unknown = (
        'headwater_events_rejected_total{event_type="nope",producer="web",'
        'reason="unknown_event_type"}'
    )
    assert value(unknown, text) - value(unknown, before) == 1
    assert "headwater_publish_seconds_bucket" in text
    assert 'headwater_consumer_lag_events{group="features",partition="0"}' in text
    assert 'headwater_dead_letters{group="features"}' in text
    # The bus's retention (the default, 7 days), which the retention alert compares with.
    assert value("headwater_bus_retention_seconds ", text) == 7 * 86_400


def test_request_id_flows_from_publish_to_the_signal_and_the_logs(
    client: TestClient, hw: Application, web_key: str
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("headwater")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        r = client.post(
            "/v1/signals",
            json=[event(10)],
            headers={**auth(web_key), "X-Request-ID": "trace-abc-1"},
        )
    finally:
        logger.removeHandler(handler)
    assert r.headers["X-Request-ID"] == "trace-abc-1"
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    publish = next(x for x in lines if x["msg"] == "publish")
    assert publish["request_id"] == "trace-abc-1"
    assert publish["producer"] == "web"
    # Event ids name a user's events: logs carry counts and the request id, never them
    # (they would outlive an erasure, which does not reach log files).
    assert "o-10" not in stream.getvalue()
    # The request id rides in the signal's envelope, so consumers can log it too.
    consumer = hw.bus.consumer("peek")
    records = consumer.poll(10, 1.0)
    consumer.close()
    from headwater.contract.signal import decode_signal

    assert decode_signal(records[-1].value).request_id == "trace-abc-1"
    # The feature consumer's line for the batch names the same request.
    runtime = hw.consumer("features")
    logger.addHandler(handler)
    try:
        drain(runtime)
    finally:
        logger.removeHandler(handler)
        runtime.close()
    applied = [
        json.loads(x) for x in stream.getvalue().splitlines() if json.loads(x)["msg"] == "applied"
    ]
    assert any("trace-abc-1" in line["request_ids"] for line in applied)
    unsafe = client.post(
        "/v1/signals", json=[event(11)], headers={**auth(web_key), "X-Request-ID": "bad id\n"}
    )
    assert unsafe.headers["X-Request-ID"].startswith("req_")


def test_ingestion_stats_have_rates_reasons_and_an_example(
    client: TestClient, hw: Application, web_key: str
) -> None:
    client.post(
        "/v1/signals", json=[event(20), event(21, payload={"dwell_ms": "x"})], headers=auth(web_key)
    )
    assert client.get("/v1/stats/ingestion", headers=auth(web_key)).status_code == 403
    operator = make_key(hw, "sre", "operator")
    teams = client.get("/v1/stats/ingestion?window=60", headers=auth(operator)).json()["teams"]
    web = next(t for t in teams if t["team"] == "web")
    assert web["accepted_per_s"] > 0
    assert web["rejected_per_s"] > 0
    assert web["top_reasons"][0][0] == "wrong_type"
    example = web["example_rejection"]
    assert example["field"] == "payload.dwell_ms"
    assert web["top_fields"][0] == {"field": "payload.dwell_ms", "rule": "wrong_type", "count": 1}
    # The example keeps the event's shape, never its values: nothing personal is kept.
    assert example["event"]["event_id"] == "<string, 4 chars>"
    assert example["event"]["user_id"].startswith("<string,")
    assert example["event"]["event_type"] == "view"
    assert example["event"]["payload"] == {"dwell_ms": "<string, 1 chars>"}
    assert "message" not in example


def test_undeclared_field_names_are_masked(
    client: TestClient, hw: Application, web_key: str
) -> None:
    # Names the producer chose are shown by their length; the contract's names stay.
    odd = event(
        30,
        payload={"dwell_ms": 5, "jane@example.com": "x", "dob-1990-01-01": {"deep@x.io": 1}},
    )
    odd["john.doe@example.com"] = "y"
    only_top = event(31) | {"mary@example.com": 1}
    r = client.post("/v1/signals", json=[only_top, odd], headers=auth(web_key))
    assert r.status_code == 207, r.text
    operator = make_key(hw, "sre", "operator")
    stats = client.get("/v1/stats/ingestion", headers=auth(operator))
    for name in ("jane@", "john.doe", "mary@", "1990-01-01", "deep@x.io", "example.com"):
        assert name not in stats.text, name
    web = next(t for t in stats.json()["teams"] if t["team"] == "web")
    example = web["example_rejection"]
    assert example["event"]["event_type"] == "view"
    assert example["event"]["payload"] == {
        "dwell_ms": "<number>",
        "<undeclared field 2, 16 chars>": "<string, 1 chars>",
        "<undeclared field 3, 14 chars>": {"<undeclared field 1, 9 chars>": "<number>"},
    }
    assert example["event"]["<undeclared field 8, 20 chars>"] == "<string, 1 chars>"
    assert sorted((f["field"], f["rule"]) for f in web["top_fields"]) == [
        ("<undeclared field>", "unknown_field"),
        ("payload.<undeclared field>", "undeclared_payload_field"),
    ]
    assert example["field"] == "payload.<undeclared field>"


def test_slo_report_and_breach_alert(client: TestClient, hw: Application, web_key: str) -> None:
    runtime = hw.consumer("features", batch_size=100)
    client.post("/v1/signals", json=[event(i) for i in range(30, 60)], headers=auth(web_key))
    drain(runtime)
    handler = runtime.handler
    handler._flush_slo(force=True)  # type: ignore[attr-defined]
    operator = make_key(hw, "sre", "operator")
    slos = client.get("/v1/slo?window=600", headers=auth(operator)).json()["slos"]
    view = next(s for s in slos if s["event_type"] == "view" and s["producer"] == "web")
    assert view["events"] == 30
    assert view["compliance"] == 1.0
    assert view["breached"] is False
    assert view["budget_s"] == 60.0

    # 95 of 100 events within budget: compliance 95% < 99%, the error budget burns 5x.
    recorder = SloRecorder(lambda: {"click": 1.0})
    now = time.time()
    for i in range(100):
        recorder.observe("ios", "click", 0.5 if i < 95 else 2.0, now)
    hw.online.put("slo", recorder.rows())
    report = slo_report(hw.online, {"click": 1.0}, window_s=600)
    click = next(r for r in report if r["event_type"] == "click")
    assert (click["events"], click["within_budget"], click["breached"]) == (100, 95, True)
    assert click["burn_rate"] == 5.0
    assert click["max_freshness_s"] == 2.0
    alerts: list[dict[str, Any]] = []
    monitor = SloMonitor(
        hw.online, lambda: {"click": 1.0, "view": 60.0}, window_s=600, min_events=10
    )
    monitor._alert = alerts.append  # type: ignore[method-assign]
    monitor.evaluate()
    assert [(a["producer"], a["event_type"]) for a in alerts] == [("ios", "click")]
    monitor.evaluate()
    assert len(alerts) == 1, "one alert per breach, not one per evaluation"
    # A consumer that stops: as_of ages past the budget and the SLO is breached too.
    lagging = SloMonitor(
        hw.online,
        lambda: hw.features.engine.budgets_s,
        window_s=600,
        as_of_age=lambda: 3600.0,
    )
    lagging_alerts: list[dict[str, Any]] = []
    lagging._alert = lagging_alerts.append  # type: ignore[method-assign]
    lagging.evaluate()
    assert any(a["event_type"] == "view" for a in lagging_alerts)
    runtime.close()


def test_json_log_lines_carry_no_terminal_colour_codes() -> None:
    # Libraries colour their messages and tracebacks for terminals; a JSON line is for
    # machines, whose parsers and searches would see the escape bytes.
    red = "\x1b[31mfailed\x1b[0m: \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"
    try:
        raise ValueError(red)
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, red, (), None)
        record.exc_info = sys.exc_info()
    record.detail = red
    line = JsonFormatter().format(record)
    assert "\x1b" not in line
    assert "\\u001b" not in line
    doc = json.loads(line)
    assert doc["msg"] == doc["detail"] == "failed: link"
    assert "ValueError: failed: link" in doc["exc"]

"""Request ids and the count of answers on every request, and the gauges computed when
Prometheus scrapes."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from fastapi import FastAPI
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headwater.application import Application
from headwater.gateway._errors import internal_error
from headwater.gateway.trends import ResponseCounts
from headwater.logs import REQUEST_ID
from headwater.metrics import HTTP_REQUESTS, REGISTRY
from headwater.wire import new_event_id

__all__ = ["BACKENDS", "BackendCollector", "install_request_telemetry"]

log = logging.getLogger("headwater.telemetry")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
#: Methods counted by name; any other a caller invents is counted as ``other``, so no
#: request can add series of its own.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def install_request_telemetry(app: FastAPI) -> None:
    """Give every request an id (the caller's X-Request-ID if safe), echoed in the answer
    and present on every log line written while serving it; count every answer per route
    template, method and status (``headwater_http_requests_total``) and per status for
    the dashboard (``app.state.responses``, its 429 and 503 rates)."""
    app.state.responses = ResponseCounts()
    app.add_middleware(_RequestTelemetry, responses=app.state.responses)


class _RequestTelemetry:
    """Plain ASGI (no ``BaseHTTPMiddleware``: its task and stream per request cost about
    as much as reading a batch's ids back)."""

    def __init__(self, app: ASGIApp, responses: ResponseCounts) -> None:
        self.app = app
        self.responses = responses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        rid = given if _SAFE_ID.match(given) else new_event_id("req_")
        header = (b"x-request-id", rid.encode("ascii"))
        status = 500  # an exception no handler answered becomes a 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                self.responses.add(status)
                headers = [h for h in message.get("headers", ()) if h[0].lower() != header[0]]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        token = REQUEST_ID.set(rid)
        try:
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                if started:
                    raise  # part of the answer is sent: nothing else can be
                # Logged and answered here, while the request id is still set.
                log.exception("unexpected error answering %s %s", scope["method"], scope["path"])
                await internal_error(Request(scope))(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
            method = scope["method"] if scope["method"] in _METHODS else "other"
            HTTP_REQUESTS.labels(_route_of(scope), method, str(status)).inc()


def _route_of(scope: Scope) -> str:
    # The template as the OpenAPI writes it, not the path: one series per route,
    # whatever the ids in the path.
    # The router puts the matched route into the request's scope.
    path = getattr(scope.get("route"), "path_format", None)
    return path if isinstance(path, str) else "unmatched"


class BackendCollector(Collector):
    """Consumer lag, dead letters, erasure requests (by state, past their deadline, overdue
    per store), the batch's last successful runs and feature backfills' progress, read
    from the backends at scrape.

    One collector for the process; each running app adds its services while it runs.
    """

    def __init__(self) -> None:
        self.sources: list[Application] = []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        lag_events = GaugeMetricFamily(
            "headwater_consumer_lag_events",
            "Events a consumer group has not committed",
            labels=["group", "partition"],
        )
        lag_seconds = GaugeMetricFamily(
            "headwater_consumer_lag_seconds",
            "Age of the oldest event a group has not committed",
            labels=["group", "partition"],
        )
        retention = GaugeMetricFamily(
            "headwater_bus_retention_seconds",
            "How long the bus keeps a record (absent: for ever); a group whose oldest "
            "unread record is older than this has lost records",
        )
        dlq = GaugeMetricFamily(
            "headwater_dead_letters", "Dead letters not yet replayed", labels=["group"]
        )
        erasures = GaugeMetricFamily(
            "headwater_erasure_requests", "Erasure requests by state", labels=["state"]
        )
        past_deadline = GaugeMetricFamily(
            "headwater_erasure_requests_past_deadline",
            "Open erasure requests past their regulatory deadline",
        )
        overdue = GaugeMetricFamily(
            "headwater_erasure_overdue_tasks",
            "Open erasure requests whose store (participant) has not confirmed in time, or failed",
            labels=["participant"],
        )
        batch_success = GaugeMetricFamily(
            "headwater_batch_last_success_timestamp_seconds",
            "When the latest successful batch run of each kind finished (Unix time)",
            labels=["kind"],
        )
        backfills = GaugeMetricFamily(
            "headwater_feature_backfill_progress",
            "Share (0 to 1) of the archive's users a feature's backfill or rebuild has "
            "computed (1 when staged, waiting for the stream to take it over)",
            labels=["feature", "kind", "state"],
        )
        for services in self.sources[:1]:  # one app per process in practice
            try:
                kept = services.bus.erasure_capability().retention_seconds
                if kept is not None:
                    retention.add_metric([], kept)
                for group in services.lag_groups:
                    for p in services.bus.lag(group):
                        lag_events.add_metric([group, str(p.partition)], p.lag_events)
                        lag_seconds.add_metric([group, str(p.partition)], p.lag_seconds)
                    dlq.add_metric([group], services.dead_letters.count(group))
                for state, n in services.ledger.counts().items():
                    erasures.add_metric([state], n)
                backlog = services.ledger.backlog()
                past_deadline.add_metric([], backlog.past_deadline)
                for participant, n in sorted(backlog.overdue.items()):
                    overdue.add_metric([participant], n)
                for kind, at in sorted(services.batch_state.last_succeeded().items()):
                    batch_success.add_metric([kind], at.timestamp())
                for run in services.feature_backfills.runs(("computing", "staged")):
                    done, total = run.progress.get("users_done"), run.progress.get("users_total")
                    share = 1.0 if run.state == "staged" else _share(done, total)
                    for name in run.features:
                        backfills.add_metric([name, run.kind, run.state], share)
            except Exception:  # a scrape must answer even when one backend is down
                log.exception("metrics collection failed")
        yield lag_events
        yield lag_seconds
        yield retention
        yield dlq
        yield erasures
        yield past_deadline
        yield overdue
        yield batch_success
        yield backfills


def _share(done: object, total: object) -> float:
    if isinstance(done, int) and isinstance(total, int) and total > 0:
        return min(1.0, done / total)
    return 0.0


#: The process's collector, registered once.
BACKENDS = BackendCollector()
REGISTRY.register(BACKENDS)

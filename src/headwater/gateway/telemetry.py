"""Request ids on every request, and the gauges computed when Prometheus scrapes."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from headwater.application import Application
from headwater.gateway._errors import internal_error
from headwater.logs import REQUEST_ID
from headwater.metrics import REGISTRY
from headwater.wire import new_event_id

__all__ = ["BACKENDS", "BackendCollector", "install_request_ids"]

log = logging.getLogger("headwater.telemetry")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def install_request_ids(app: FastAPI) -> None:
    """Give every request an id (the caller's X-Request-ID if safe), echoed in the answer
    and present on every log line written while serving it."""

    @app.middleware("http")
    async def request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        given = request.headers.get("x-request-id", "")
        rid = given if _SAFE_ID.match(given) else new_event_id("req_")
        token = REQUEST_ID.set(rid)
        try:
            response = await call_next(request)
        except Exception:
            # Logged and answered here, while the request id is still set.
            log.exception("unexpected error answering %s %s", request.method, request.url.path)
            response = internal_error(request)
        finally:
            REQUEST_ID.reset(token)
        response.headers["X-Request-ID"] = rid
        return response


class BackendCollector(Collector):
    """Consumer lag, dead letters, erasure requests and feature backfills' progress, read
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
        dlq = GaugeMetricFamily(
            "headwater_dead_letters", "Dead letters not yet replayed", labels=["group"]
        )
        erasures = GaugeMetricFamily(
            "headwater_erasure_requests", "Erasure requests by state", labels=["state"]
        )
        backfills = GaugeMetricFamily(
            "headwater_feature_backfill_progress",
            "Share (0 to 1) of the archive's users a feature's backfill or rebuild has "
            "computed (1 when staged, waiting for the stream to take it over)",
            labels=["feature", "kind", "state"],
        )
        for services in self.sources[:1]:  # one app per process in practice
            try:
                for group in services.lag_groups:
                    for p in services.bus.lag(group):
                        lag_events.add_metric([group, str(p.partition)], p.lag_events)
                        lag_seconds.add_metric([group, str(p.partition)], p.lag_seconds)
                    dlq.add_metric([group], services.dead_letters.count(group))
                for state, n in services.ledger.counts().items():
                    erasures.add_metric([state], n)
                for run in services.feature_backfills.runs(("computing", "staged")):
                    done, total = run.progress.get("users_done"), run.progress.get("users_total")
                    share = 1.0 if run.state == "staged" else _share(done, total)
                    for name in run.features:
                        backfills.add_metric([name, run.kind, run.state], share)
            except Exception:  # a scrape must answer even when one backend is down
                log.exception("metrics collection failed")
        yield lag_events
        yield lag_seconds
        yield dlq
        yield erasures
        yield backfills


def _share(done: object, total: object) -> float:
    if isinstance(done, int) and isinstance(total, int) and total > 0:
        return min(1.0, done / total)
    return 0.0


#: The process's collector, registered once.
BACKENDS = BackendCollector()
REGISTRY.register(BACKENDS)

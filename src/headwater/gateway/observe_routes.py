"""Operating headwater (``operator``): ``/metrics``, ``/v1/slo``, live stats, readiness;
and liveness for anyone."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from headwater.access.roles import Role
from headwater.gateway._deps import application
from headwater.gateway._errors import json_response
from headwater.gateway._schemas import errors
from headwater.gateway.dashboard_view import consumers_view
from headwater.gateway.security import public, requires
from headwater.gateway.telemetry import BACKENDS
from headwater.metrics.exposition import scrape_registry
from headwater.slo import slo_report

__all__ = ["router"]

router = APIRouter()


@router.get(
    "/metrics",
    summary="Prometheus metrics (scrape with an operator key as the bearer token)",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
    dependencies=[requires(Role.OPERATOR)],
)
async def metrics() -> Response:
    """Every counter and histogram, plus lag, dead letters and erasures read at scrape;
    under ``headwater up --processes``, those of every process."""
    body = await run_in_threadpool(generate_latest, scrape_registry(BACKENDS))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/v1/slo",
    summary="Freshness SLO compliance per producer team and event type",
    responses=errors(401, 403, 503),
    dependencies=[requires(Role.OPERATOR)],
)
async def slo(
    request: Request,
    window: Annotated[float, Query(ge=60, le=86_400, description="Seconds")] = 3600,
    objective: Annotated[float, Query(gt=0, lt=1)] = 0.99,
) -> Response:
    """Per (producer, event type): events, the share readable within the type's budget,
    the burn rate of the error budget, and whether the objective is breached."""
    svc = application(request)
    budgets = svc.features.engine.budgets_s
    rows = await run_in_threadpool(
        slo_report, svc.online, budgets, window_s=window, objective=objective
    )
    return json_response(
        {
            "window_s": window,
            "objective": objective,
            "slos": rows,
            "breached": [r for r in rows if r["breached"]],
        }
    )


@router.get(
    "/v1/stats/ingestion",
    summary="Recent ingestion per producer team",
    responses=errors(401, 403),
    dependencies=[requires(Role.OPERATOR)],
)
async def ingestion(request: Request, window: Annotated[int, Query(ge=5, le=300)] = 60) -> Response:
    """Accepted and rejected events per second per team over the window, top rejection
    reasons and fields, and an example rejected event with its values masked (this
    gateway process)."""
    return json_response(
        {"window_s": window, "teams": application(request).ingestor.stats.snapshot(window)}
    )


@router.get(
    "/v1/stats/consumers",
    summary="Consumer lag, feature as_of, dead letters",
    responses=errors(401, 403, 503),
    dependencies=[requires(Role.OPERATOR)],
)
async def consumers(request: Request) -> Response:
    """Lag per group and partition (events and seconds), the streaming features' as_of
    per partition, and the dead-letter store."""
    return json_response(await run_in_threadpool(consumers_view, application(request)))


@router.get("/v1/health", summary="Liveness: the process answers", dependencies=[public()])
async def health() -> Response:
    """Liveness only: nothing about the backends (see ``/v1/ready``, for operators)."""
    return json_response({"status": "ok"})


@router.get(
    "/v1/status",
    summary="Every consumer instance and every group's lag",
    responses=errors(401, 403, 503),
    dependencies=[requires(Role.OPERATOR)],
)
async def consumer_status(request: Request) -> Response:
    """Per consumer group: lag, and each running instance (host, pid, partitions with
    their generations, records applied, fenced batches, last commit)."""
    return json_response(await run_in_threadpool(application(request).status))


@router.get(
    "/v1/ready",
    summary="Readiness: every backend answers",
    responses=errors(401, 403, 503),
    dependencies=[requires(Role.OPERATOR)],
)
async def ready(request: Request) -> Response:
    """Each backend checked now (control plane, bus, online store, idempotency window):
    200 when all answer, 503 naming the one that does not."""
    report = await run_in_threadpool(application(request).readiness)
    return json_response(report, 200 if report["ready"] else 503)

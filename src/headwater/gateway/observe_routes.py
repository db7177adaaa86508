"""Operating headwater (``operator``): ``/metrics``, ``/v1/slo``, live stats, readiness;
and liveness for anyone."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from headwater.access.roles import Role
from headwater.gateway._deps import application
from headwater.gateway._errors import problem, problem_response
from headwater.gateway._schemas import Answer, errors, ref
from headwater.gateway.dashboard_view import consumers_view
from headwater.gateway.observe_answers import (
    ConsumerStats,
    Health,
    IngestionStats,
    Readiness,
    SloReport,
    StatusReport,
    Unready,
)
from headwater.gateway.security import public, requires
from headwater.gateway.telemetry import BACKENDS
from headwater.metrics.exposition import scrape_registry
from headwater.slo import slo_report
from headwater.wire import PROBLEM_JSON

__all__ = ["router"]

router = APIRouter()

SLO = Answer(SloReport, "Compliance per producer team and event type")
INGESTION = Answer(IngestionStats, "Events per second and rejections per team")
CONSUMERS = Answer(ConsumerStats, "Lag, feature as_of and dead letters")
HEALTH = Answer(Health, "The process answers")
STATUS = Answer(StatusReport, "Consumer instances and lag per group")
READY = Answer(Readiness, "Every backend answers")


@router.get(
    "/metrics",
    summary="Prometheus metrics (scrape with an operator key as the bearer token)",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text"},
        **errors(401, 403),
    },
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
    responses=SLO.responses(401, 403, 422, 503),
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
    breached = [r for r in rows if r["breached"]]
    doc = {"window_s": window, "objective": objective, "slos": rows, "breached": breached}
    return SLO.reply(msgspec.convert(doc, SloReport))


@router.get(
    "/v1/stats/ingestion",
    summary="Recent ingestion per producer team",
    responses=INGESTION.responses(401, 403, 422),
    dependencies=[requires(Role.OPERATOR)],
)
async def ingestion(request: Request, window: Annotated[int, Query(ge=5, le=300)] = 60) -> Response:
    """Accepted and rejected events per second per team over the window, top rejection
    reasons and fields, and an example rejected event with its values masked (this
    gateway process)."""
    teams = application(request).ingestor.stats.snapshot(window)
    return INGESTION.reply(msgspec.convert({"window_s": window, "teams": teams}, IngestionStats))


@router.get(
    "/v1/stats/consumers",
    summary="Consumer lag, feature as_of, dead letters",
    responses=CONSUMERS.responses(401, 403, 503),
    dependencies=[requires(Role.OPERATOR)],
)
async def consumers(request: Request) -> Response:
    """Lag per group and partition (events and seconds), the streaming features' as_of
    per partition, and the dead-letter store."""
    view = await run_in_threadpool(consumers_view, application(request))
    return CONSUMERS.reply(msgspec.convert(view, ConsumerStats))


@router.get(
    "/v1/health",
    summary="Liveness: the process answers",
    responses=HEALTH.responses(),
    dependencies=[public()],
)
async def health() -> Response:
    """Liveness only: nothing about the backends (see ``/v1/ready``, for operators)."""
    return HEALTH.reply(Health(status="ok"))


@router.get(
    "/v1/status",
    summary="Every consumer instance and every group's lag",
    responses=STATUS.responses(401, 403, 503),
    dependencies=[requires(Role.OPERATOR)],
)
async def consumer_status(request: Request) -> Response:
    """Per consumer group: lag, and each running instance (host, pid, partitions with
    their generations, records applied, fenced batches, last commit)."""
    status = await run_in_threadpool(application(request).status)
    return STATUS.reply(msgspec.convert(status, StatusReport))


@router.get(
    "/v1/ready",
    summary="Readiness: every backend answers",
    responses={
        **READY.responses(401, 403),
        503: {
            "description": "A backend does not answer: a problem document that keeps the "
            "readiness report (type https://headwater.dev/problems/not-ready)",
            "content": {PROBLEM_JSON: {"schema": ref(Unready)}},
        },
    },
    dependencies=[requires(Role.OPERATOR)],
)
async def ready(request: Request) -> Response:
    """Each backend checked now (control plane, bus, online store, idempotency window):
    200 when all answer, 503 naming the one that does not."""
    report = await run_in_threadpool(application(request).readiness)
    state = msgspec.convert(report, Readiness)
    if state.ready:
        return READY.reply(state)
    down = sorted(name for name, backend in state.backends.items() if not backend.ok)
    base = problem(request, "not-ready", f"not answering: {', '.join(down)}")
    doc = Unready(
        **msgspec.structs.asdict(base),
        ready=False,
        backends=state.backends,
        where=state.where,
    )
    return problem_response(doc, {"Retry-After": "1"})

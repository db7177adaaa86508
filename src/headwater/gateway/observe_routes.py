"""Operating headwater: ``/metrics``, ``/v1/slo``, live stats, and the dashboard."""

from __future__ import annotations

import time
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from headwater.application import Application
from headwater.gateway._deps import application
from headwater.gateway._errors import json_response
from headwater.gateway._schemas import errors
from headwater.metrics import REGISTRY
from headwater.slo import slo_report

__all__ = ["router"]

router = APIRouter()


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response:
    """Every counter and histogram, plus lag, dead letters and erasures read at scrape."""
    body = await run_in_threadpool(generate_latest, REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/v1/slo",
    summary="Freshness SLO compliance per producer team and event type",
    responses=errors(503),
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


@router.get("/v1/stats/ingestion", summary="Recent ingestion per producer team")
async def ingestion(request: Request, window: Annotated[int, Query(ge=5, le=300)] = 60) -> Response:
    """Accepted and rejected events per second per team over the window, top rejection
    reasons and an example rejected event (this gateway process)."""
    return json_response(
        {"window_s": window, "teams": application(request).ingestor.stats.snapshot(window)}
    )


def _consumers(svc: Application) -> dict[str, Any]:
    groups = []
    for group in svc.lag_groups:
        parts = svc.bus.lag(group)
        groups.append(
            {
                "group": group,
                "lag_events": sum(p.lag_events for p in parts),
                "lag_seconds": max((p.lag_seconds for p in parts), default=0.0),
                "partitions": [
                    {
                        "partition": p.partition,
                        "committed": p.committed,
                        "end": p.end,
                        "lag_events": p.lag_events,
                        "lag_seconds": p.lag_seconds,
                    }
                    for p in parts
                ],
            }
        )
    now_ms = time.time() * 1000
    positions = svc.online.positions(svc.features.group)
    as_of = [
        {
            "partition": p,
            "as_of_ms": pos.as_of_ms,
            "age_s": round(max(0.0, now_ms - pos.as_of_ms) / 1000, 3),
        }
        for p, pos in sorted(positions.items())
    ]
    letters = svc.dead_letters.list(limit=20)
    return {
        "groups": groups,
        "features_as_of": as_of,
        "dead_letters": {g: svc.dead_letters.count(g) for g in svc.lag_groups},
        "dead_letters_total": svc.dead_letters.count(),
        "recent_dead_letters": [
            {
                "id": d.id,
                "kind": d.record.kind,
                "error": d.error,
                "attempts": d.attempts,
                "failed_at": d.failed_at,
            }
            for d in letters
        ],
    }


@router.get(
    "/v1/stats/consumers",
    summary="Consumer lag, feature as_of, dead letters",
    responses=errors(503),
)
async def consumers(request: Request) -> Response:
    """Lag per group and partition (events and seconds), the streaming features' as_of
    per partition, and the dead-letter store."""
    return json_response(await run_in_threadpool(_consumers, application(request)))


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    """The operator's page: ingestion, freshness, lag, dead letters, deletions, users."""
    page = resources.files("headwater.gateway") / "static" / "dashboard.html"
    return HTMLResponse(page.read_text(encoding="utf-8"))

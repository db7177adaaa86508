"""Erasure requests and their audit: ``/v1/deletions``."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from headwater.errors import ErasureError, MalformedBatchError
from headwater.gateway._deps import application
from headwater.gateway._errors import json_response
from headwater.gateway._schemas import errors
from headwater.gateway.ingest_routes import AuthHeader, KeyHeader, authenticate

__all__ = ["router"]

router = APIRouter()


class DeletionBody(msgspec.Struct, forbid_unknown_fields=True):
    """Body of an erasure request."""

    user_id: str
    reason: str = ""


@router.post(
    "/v1/deletions",
    summary="Erase a user from every store",
    status_code=202,
    responses=errors(400, 401, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["user_id"],
                        "properties": {
                            "user_id": {"type": "string", "minLength": 1, "maxLength": 128},
                            "reason": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def create_deletion(
    request: Request, authorization: AuthHeader = None, x_api_key: KeyHeader = None
) -> Response:
    """Open an erasure request: an erasure event goes on the bus after the user's signals.

    Answers 202 with the request and its per-store tasks; follow it at
    ``GET /v1/deletions/{request_id}``.
    """
    await run_in_threadpool(authenticate, request, authorization, x_api_key)
    try:
        body = msgspec.json.decode(await request.body(), type=DeletionBody)
    except msgspec.DecodeError as exc:
        raise MalformedBatchError(f"expected {{'user_id': ...}}: {exc}") from None
    if not 1 <= len(body.user_id) <= 128:
        raise MalformedBatchError("user_id must be 1 to 128 characters")
    svc = application(request)
    record = await run_in_threadpool(svc.orchestrator.request, body.user_id, reason=body.reason)
    audit = await run_in_threadpool(svc.orchestrator.audit, record.request_id)
    return json_response(audit, 202)


@router.get(
    "/v1/deletions/{request_id}",
    summary="The audit of one erasure request",
    responses=errors(404, 503),
)
async def deletion_audit(request: Request, request_id: str) -> Response:
    """Status, deadline, time remaining, and one row per store: confirmed (when, how,
    evidence) or outstanding. Never a single pass/fail."""
    svc = application(request)
    return json_response(await run_in_threadpool(svc.orchestrator.audit, request_id))


@router.get(
    "/v1/deletions",
    summary="Erasure requests: open, overdue or completed",
    responses=errors(400, 503),
)
async def list_deletions(
    request: Request,
    status: Annotated[Literal["open", "overdue", "completed", "all"], Query()] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Requests with their per-store summary; ``overdue`` lists open requests with an
    overdue or failed store."""
    svc = application(request)

    def collect() -> list[dict[str, object]]:
        wanted = None if status in ("all", "overdue") else status
        ids = svc.ledger.request_ids(status=wanted, limit=limit if status != "overdue" else 10_000)
        audits = [svc.orchestrator.audit(i) for i in ids]
        if status == "overdue":
            audits = [
                a
                for a in audits
                if a["status"] == "open"
                and any(s["status"] in ("overdue", "failed") for s in a["stores"])
            ][:limit]
        return audits

    try:
        found = await run_in_threadpool(collect)
    except ErasureError as exc:
        raise MalformedBatchError(str(exc)) from None
    return json_response(
        {"status": status, "requests": found, "counts": await run_in_threadpool(svc.ledger.counts)}
    )

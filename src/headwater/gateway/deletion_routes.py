"""Erasure requests and their audit: ``/v1/deletions``."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from headwater.access.keys import ApiKey
from headwater.access.roles import Role
from headwater.erasure.legal import LEGAL_BASES
from headwater.errors import ErasureError, MalformedBatchError
from headwater.gateway._deps import application
from headwater.gateway._schemas import Answer, json_body
from headwater.gateway.answers import DeletionAudit, DeletionList
from headwater.gateway.bodies import decode_json, read_body
from headwater.gateway.security import requires

__all__ = ["router"]

router = APIRouter()

#: An erasure request's body: a user id, a basis and a reference.
DELETION_BODY_LIMIT = 4096


class DeletionBody(msgspec.Struct, forbid_unknown_fields=True):
    """Body of an erasure request."""

    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    legal_basis: Annotated[
        str,
        msgspec.Meta(
            description="The basis of the erasure", extra_json_schema={"enum": list(LEGAL_BASES)}
        ),
    ]
    reference: Annotated[
        str | None,
        msgspec.Meta(
            description="A ticket or case id (no free text)",
            extra_json_schema={"pattern": "^[A-Za-z0-9][A-Za-z0-9._:/#-]{0,63}$"},
        ),
    ] = None


CREATED = Answer(DeletionAudit, "The request opened, with its per-store tasks", 202)
AUDIT = Answer(DeletionAudit, "The request's status, deadline and one row per store")
LISTING = Answer(DeletionList, "The requests asked for, with the counts per status")


@router.post(
    "/v1/deletions",
    summary="Erase a user from every store",
    status_code=202,
    responses=CREATED.responses(400, 401, 403, 408, 413, 503),
    openapi_extra=json_body(DeletionBody),
)
async def create_deletion(
    request: Request, key: Annotated[ApiKey, requires(Role.PRIVACY)]
) -> Response:
    """Open an erasure request: an erasure event goes on the bus after the user's signals.

    Answers 202 with the request and its per-store tasks; follow it at
    ``GET /v1/deletions/{request_id}``.
    """
    raw = await read_body(request, DELETION_BODY_LIMIT)
    body = decode_json(raw, DeletionBody, "{'user_id': ..., 'legal_basis': ...}")
    svc = application(request)
    record = await run_in_threadpool(
        lambda: svc.orchestrator.request(
            body.user_id,
            legal_basis=body.legal_basis,
            reference=body.reference,
            requested_by=f"{key.kind}:{key.team} (key {key.key_id})",
        )
    )
    audit = await run_in_threadpool(svc.orchestrator.audit, record.request_id)
    return CREATED.reply(msgspec.convert(audit, DeletionAudit), 202)


@router.get(
    "/v1/deletions/{request_id}",
    summary="The audit of one erasure request",
    responses=AUDIT.responses(401, 403, 404, 503),
    dependencies=[requires(Role.PRIVACY)],
)
async def deletion_audit(request: Request, request_id: str) -> Response:
    """Status, deadline, time remaining, and one row per store: confirmed (when, how,
    evidence) or outstanding. Never a single pass/fail."""
    svc = application(request)
    audit = await run_in_threadpool(svc.orchestrator.audit, request_id)
    return AUDIT.reply(msgspec.convert(audit, DeletionAudit))


@router.get(
    "/v1/deletions",
    summary="Erasure requests: open, overdue or completed",
    responses=LISTING.responses(400, 401, 403, 422, 503),
    dependencies=[requires(Role.PRIVACY, Role.OPERATOR)],
)
async def list_deletions(
    request: Request,
    status: Annotated[Literal["open", "overdue", "completed", "all"], Query()] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Requests with their per-store summary; ``overdue`` lists open requests past their
    deadline or with an overdue or failed store."""
    svc = application(request)

    def collect() -> list[dict[str, object]]:
        if status == "overdue":
            return svc.orchestrator.overdue(limit)
        ids = svc.ledger.request_ids(status=None if status == "all" else status, limit=limit)
        return [svc.orchestrator.audit(i) for i in ids]

    try:
        found = await run_in_threadpool(collect)
    except ErasureError as exc:
        raise MalformedBatchError(str(exc)) from None
    counts = await run_in_threadpool(svc.ledger.counts)
    doc = {"status": status, "requests": found, "counts": counts}
    return LISTING.reply(msgspec.convert(doc, DeletionList))

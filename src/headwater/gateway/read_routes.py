"""Feature reads: ``GET /v1/users/{user_id}/features`` and the batch read."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from headwater.access.roles import Role
from headwater.errors import BatchTooLargeError
from headwater.gateway._deps import application
from headwater.gateway._schemas import Answer, json_body
from headwater.gateway.bodies import decode_json, read_body
from headwater.gateway.paths import USER
from headwater.gateway.security import requires
from headwater.wire import FeatureBatch, UserFeatures

__all__ = ["router"]

router = APIRouter()

MAX_BATCH_USERS = 1000
#: 1,000 ids of up to 128 characters, quoted, with room for the feature names.
BATCH_BODY_LIMIT = 256 * 1024


class BatchRead(msgspec.Struct, forbid_unknown_fields=True):
    """Body of a batch read."""

    # Over the bound is a 413 (too large), not a malformed body: checked by the route.
    user_ids: Annotated[
        list[str],
        msgspec.Meta(
            description=f"At most {MAX_BATCH_USERS} user ids",
            extra_json_schema={"maxItems": MAX_BATCH_USERS},
        ),
    ]
    features: list[str] | None = None


FEATURES = Answer(UserFeatures, "Features with as_of, age and staleness")
MANY = Answer(FeatureBatch, "Each user's features, in the order asked")


def _select(features: str | None) -> list[str] | None:
    return [f for f in features.split(",") if f] if features else None


@router.get(
    f"{USER}/features",
    summary="One user's features with freshness",
    responses=FEATURES.responses(401, 403, 422, 503),
    dependencies=[requires(Role.READER)],
)
async def user_features(
    request: Request,
    user_id: str,
    features: Annotated[
        str | None, Query(description="Comma-separated names; all if absent")
    ] = None,
) -> Response:
    """The user's streaming features, each answer stamped with ``as_of`` and age.

    When the consumer lags past a feature's freshness budget the answer says
    ``stale: true`` and lists the stale features: it is never passed off as fresh.
    """
    svc = application(request)
    select = _select(features)
    if svc.features.store.local:
        # A one-row read of a local file costs tens of microseconds: less than the hop
        # to a worker thread, whose wake-ups doubled the p99 at 1,000 reads/s.
        answer = svc.features.read(user_id, select)
    else:
        answer = await run_in_threadpool(svc.features.read, user_id, select)
    return FEATURES.reply(answer)


@router.post(
    "/v1/features/batch",
    summary="Features of many users in one call",
    responses=MANY.responses(400, 401, 403, 408, 413, 503),
    openapi_extra=json_body(BatchRead),
    dependencies=[requires(Role.READER)],
)
async def batch_features(request: Request) -> Response:
    """``{"user_ids": [...], "features": [...]}`` -> ``{"users": [...]}`` in the same order."""
    raw = await read_body(request, BATCH_BODY_LIMIT)
    body = decode_json(raw, BatchRead, "{'user_ids': [...]}")
    if len(body.user_ids) > MAX_BATCH_USERS:
        raise BatchTooLargeError(f"at most {MAX_BATCH_USERS} users per batch read")
    svc = application(request)
    answers = await run_in_threadpool(svc.features.read_many, body.user_ids, body.features)
    return MANY.reply(FeatureBatch(answers))

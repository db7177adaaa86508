"""``POST /v1/signals``: publish a batch of signals (``producer``)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from headwater._jsonguard import check_json
from headwater.access.keys import ApiKey
from headwater.access.roles import Role
from headwater.errors import BatchTooLargeError
from headwater.gateway._deps import application
from headwater.gateway._schemas import Answer, ref
from headwater.gateway.answers import SubmittedSignal
from headwater.gateway.bodies import inflate, read_body
from headwater.gateway.security import requires
from headwater.ingest.ingestor import IngestOutcome
from headwater.logs import REQUEST_ID
from headwater.metrics import PUBLISH_SECONDS

__all__ = ["router"]

router = APIRouter()

OUTCOME = Answer(
    IngestOutcome,
    "200: every event accepted (or already accepted: duplicate); 207: some events "
    "rejected, each naming its index, event_id, field and rule; the others published",
    200,
    207,
)

_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"type": "array", "items": ref(SubmittedSignal), "maxItems": 500}
        },
        "application/x-ndjson": {
            "schema": {"type": "string", "description": "one JSON event per line"}
        },
    },
}


@router.post(
    "/v1/signals",
    summary="Publish a batch of signals",
    openapi_extra={"requestBody": _BODY},
    responses=OUTCOME.responses(400, 401, 403, 408, 413, 429, 503),
)
async def publish(request: Request, key: Annotated[ApiKey, requires(Role.PRODUCER)]) -> Response:
    """Validate each event against its contract; publish the accepted ones durably.

    The body is a JSON array of events (``application/json``) or one event per line
    (``application/x-ndjson``), optionally gzip-compressed. 200 when every event was
    accepted, 207 when some were rejected (each rejection names index, event_id,
    field, rule and message). Nothing is published on 400, 401, 403, 408, 413, 429 or 503.
    """
    hw = application(request)
    limit = hw.ingestor.limits.max_batch_bytes
    raw = await read_body(request, limit)
    body = inflate(raw, request.headers.get("content-encoding"), limit)
    if len(body) > limit:
        raise BatchTooLargeError(f"body is {len(body)} bytes; at most {limit} per batch")
    ndjson = "ndjson" in request.headers.get("content-type", "")
    # The rate limit counts events: a JSON array's elements, as the guard reads them (a
    # body it refuses is refused here, before the limit); an upper bound for NDJSON.
    checked = None if ndjson else check_json(body)
    events = max(1, body.count(b"\n") + 1) if checked is None else max(1, checked.elements)
    hw.limiter.take(key.key_id, events, key.rate_limit_eps, key.burst)
    # Validation and encoding are CPU work: done inline, they cost less than a thread hop.
    # The claim, the durable write and the confirmation are the ingest writer's, shared
    # with the other requests waiting for it; they are awaited without holding a thread.
    started = time.perf_counter()
    ingestor = hw.ingestor
    batch = ingestor.prepare(
        body, key, ndjson=ndjson, request_id=REQUEST_ID.get() or "", checked=checked
    )
    if batch.entries:
        claim = await asyncio.wrap_future(ingestor.submit(batch))
        if ingestor.resolve(batch, claim):
            # Another send holds some of these ids (a hedged retry): wait for it off the
            # loop, then publish what this send took over.
            await run_in_threadpool(ingestor.settle, batch)
            if batch.messages:
                await asyncio.wrap_future(ingestor.submit(batch))
    outcome = ingestor.finish(batch)
    PUBLISH_SECONDS.observe(time.perf_counter() - started)
    return OUTCOME.reply(outcome, outcome.status_code)

"""``POST /v1/signals`` and the contract endpoints."""

from __future__ import annotations

import asyncio
import hashlib
import time
import zlib
from typing import Annotated, Any

import msgspec
import yaml
from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from headwater.access.keys import ProducerKey
from headwater.contract.definition import EventTypeDefinition
from headwater.contract.loader import definitions_from_document
from headwater.errors import (
    BatchTooLargeError,
    ContractDefinitionError,
    MalformedBatchError,
    PermissionDeniedError,
    UnknownEventTypeError,
)
from headwater.gateway._deps import application
from headwater.gateway._errors import json_response
from headwater.gateway._schemas import (
    CONTRACT_DOCUMENT_SCHEMA,
    PUBLISH_BODY_SCHEMA,
    PUBLISH_RESPONSES,
    errors,
)
from headwater.logs import REQUEST_ID
from headwater.metrics import PUBLISH_SECONDS
from headwater.registry.contracts import ChangePlan

__all__ = ["router"]

router = APIRouter()

_KEY_CACHE_S = 5.0


def authenticate(
    request: Request,
    authorization: str | None,
    api_key: str | None,
) -> ProducerKey:
    """The producer key of a request, cached a few seconds (revocation applies within 5 s)."""
    secret = api_key
    if authorization and authorization.lower().startswith("bearer "):
        secret = authorization[7:].strip()
    svc = application(request)
    digest = hashlib.sha256((secret or "").encode()).hexdigest()
    cache: dict[str, tuple[float, ProducerKey]] = request.app.state.key_cache
    hit = cache.get(digest)
    now = time.monotonic()
    if hit is not None and now - hit[0] < _KEY_CACHE_S:
        return hit[1]
    key = svc.keys.authenticate(secret)
    cache[digest] = (now, key)
    return key


def _decode_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    if not encoding or encoding.lower() == "identity":
        return body
    if encoding.lower() not in ("gzip", "x-gzip"):
        raise MalformedBatchError(f"unsupported Content-Encoding {encoding!r} (use gzip)")
    # Decompress at most limit + 1 bytes: a gzip bomb is refused, not expanded.
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise MalformedBatchError(f"body is not valid gzip: {exc}") from None
    if len(out) > limit or decompressor.unconsumed_tail:
        raise BatchTooLargeError(f"decompressed body exceeds {limit} bytes")
    return out


AuthHeader = Annotated[str | None, Header(description="Bearer <producer API key>")]
KeyHeader = Annotated[str | None, Header(alias="X-API-Key", description="Producer API key")]


@router.post(
    "/v1/signals",
    summary="Publish a batch of signals",
    openapi_extra={"requestBody": PUBLISH_BODY_SCHEMA},
    responses=PUBLISH_RESPONSES,
)
async def publish(
    request: Request, authorization: AuthHeader = None, x_api_key: KeyHeader = None
) -> Response:
    """Validate each event against its contract; publish the accepted ones durably.

    The body is a JSON array of events (``application/json``) or one event per line
    (``application/x-ndjson``), optionally gzip-compressed. 200 when every event was
    accepted, 207 when some were rejected (each rejection names index, event_id,
    field, rule and message). Nothing is published on 400, 401, 403, 413, 429 or 503.
    """
    svc = application(request)
    key = await run_in_threadpool(authenticate, request, authorization, x_api_key)
    limit = svc.ingestor.limits.max_batch_bytes
    raw = await request.body()
    if len(raw) > limit:
        raise BatchTooLargeError(f"body is {len(raw)} bytes; at most {limit} per batch")
    body = _decode_body(raw, request.headers.get("content-encoding"), limit)
    ndjson = "ndjson" in request.headers.get("content-type", "")
    events = _count_hint(body, ndjson=ndjson)
    svc.limiter.take(key.key_id, events, key.rate_limit_eps, key.burst)
    # Validation and encoding are CPU work: done inline, they cost less than a thread hop.
    # Only the durable write is waited for, without holding a thread.
    started = time.perf_counter()
    batch = svc.ingestor.prepare(body, key, ndjson=ndjson, request_id=REQUEST_ID.get() or "")
    if batch.messages:
        await asyncio.wrap_future(svc.ingestor.publisher.submit(batch.messages))
    outcome = svc.ingestor.finish(batch)
    PUBLISH_SECONDS.observe(time.perf_counter() - started)
    return json_response(outcome, outcome.status_code)


def _count_hint(body: bytes, *, ndjson: bool) -> int:
    # The rate limit counts events; a cheap upper bound avoids parsing twice.
    if ndjson:
        return max(1, body.count(b"\n") + 1)
    return max(1, body.count(b'"event_id"'))


def _definition_doc(item: Any) -> dict[str, Any]:
    d: EventTypeDefinition = item.definition
    return {"version": item.version, "registered_at": item.registered_at, **msgspec.to_builtins(d)}


@router.get("/v1/contracts", summary="List event types and their versions", responses=errors(503))
async def list_contracts(request: Request) -> Response:
    """Every registered event type with its latest definition and version numbers."""
    history = await run_in_threadpool(application(request).registry.history)
    return json_response(
        {
            "event_types": [
                {**_definition_doc(versions[-1]), "versions": [v.version for v in versions]}
                for versions in history.values()
            ]
        }
    )


@router.get(
    "/v1/contracts/{name}", summary="One event type's version history", responses=errors(404, 503)
)
async def contract_history(request: Request, name: str) -> Response:
    """Every version of one event type, oldest first."""
    history = await run_in_threadpool(application(request).registry.history)
    if name not in history:
        raise UnknownEventTypeError(f"no event type {name!r} is registered")
    return json_response({"name": name, "versions": [_definition_doc(v) for v in history[name]]})


async def _parse_contract_body(request: Request) -> tuple[str, dict[str, EventTypeDefinition]]:
    raw = await request.body()
    if len(raw) > 1024 * 1024:
        raise BatchTooLargeError("a contract document is at most 1 MB")
    try:
        text = raw.decode()
        doc = yaml.safe_load(text)  # JSON is YAML too: one parser for both media types
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ContractDefinitionError(f"body is neither JSON nor YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ContractDefinitionError("expected a document with team and event_types")
    definitions = definitions_from_document(doc, "request body")
    return str(doc.get("team", "")), definitions


def _plan_doc(plan: ChangePlan) -> dict[str, Any]:
    return {
        "compatible": plan.compatible,
        "added": list(plan.added),
        "changed": [{"name": n, "version": v} for n, v in plan.changed],
        "unchanged": list(plan.unchanged),
        "violations": msgspec.to_builtins(plan.violations),
    }


@router.post(
    "/v1/contracts/check",
    summary="Check proposed definitions without registering",
    openapi_extra={"requestBody": CONTRACT_DOCUMENT_SCHEMA},
    responses=errors(401, 413, 422, 503),
)
async def check_contracts(
    request: Request, authorization: AuthHeader = None, x_api_key: KeyHeader = None
) -> Response:
    """What registering this team's document would do; every violation is listed."""
    await run_in_threadpool(authenticate, request, authorization, x_api_key)
    _team, definitions = await _parse_contract_body(request)
    plan = await run_in_threadpool(application(request).registry.plan, definitions, partial=True)
    return json_response(_plan_doc(plan))


@router.post(
    "/v1/contracts",
    summary="Register new definitions or versions",
    openapi_extra={"requestBody": CONTRACT_DOCUMENT_SCHEMA},
    responses={
        201: {"description": "New types or versions registered"},
        **errors(401, 403, 409, 413, 422, 503),
    },
)
async def register_contracts(
    request: Request, authorization: AuthHeader = None, x_api_key: KeyHeader = None
) -> Response:
    """Register a team's definitions (all or nothing); only the owning team may."""
    key = await run_in_threadpool(authenticate, request, authorization, x_api_key)
    team, definitions = await _parse_contract_body(request)
    foreign = sorted(n for n, d in definitions.items() if d.owner != key.team)
    if team != key.team or foreign:
        raise PermissionDeniedError(
            f"key of team {key.team!r} may only register its own event types; "
            f"document team {team!r}, types owned by others: {foreign}"
        )
    plan = await run_in_threadpool(application(request).registry.apply, definitions, partial=True)
    await run_in_threadpool(application(request).refresh_contracts)
    return json_response(_plan_doc(plan), 201 if plan.added or plan.changed else 200)

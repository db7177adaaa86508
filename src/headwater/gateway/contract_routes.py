"""The contracts: list and history (any key), check (``producer`` or ``contracts``),
register (``contracts``, for the types its own team owns) and a change of owner
(``admin``)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import yaml
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from headwater.access.keys import ApiKey
from headwater.access.roles import Role
from headwater.contract.definition import EventTypeDefinition
from headwater.contract.loader import definitions_from_document, load_yaml
from headwater.errors import ContractDefinitionError, PermissionDeniedError, UnknownEventTypeError
from headwater.gateway._deps import application
from headwater.gateway._schemas import Answer, json_body
from headwater.gateway.answers import (
    ContractDocument,
    ContractHistory,
    ContractList,
    ContractPlan,
)
from headwater.gateway.bodies import decode_json, read_body
from headwater.gateway.security import requires
from headwater.registry.contracts import ChangePlan

__all__ = ["router"]

router = APIRouter()

#: A team's document of definitions is at most this large.
CONTRACT_BODY_LIMIT = 1024 * 1024


LIST = Answer(ContractList, "Every event type's latest definition and version numbers")
HISTORY = Answer(ContractHistory, "Every version of the event type, oldest first")
PLAN = Answer(ContractPlan, "What registering the document does; every violation listed")
REGISTERED = Answer(
    ContractPlan, "201: new types or versions registered; 200: nothing new to register", 201, 200
)


def _definition_doc(item: Any) -> dict[str, Any]:
    d: EventTypeDefinition = item.definition
    return {"version": item.version, "registered_at": item.registered_at, **msgspec.to_builtins(d)}


@router.get(
    "/v1/contracts",
    summary="List event types and their versions",
    responses=LIST.responses(401, 503),
    dependencies=[requires()],
)
async def list_contracts(request: Request) -> Response:
    """Every registered event type with its latest definition and version numbers."""
    history = await run_in_threadpool(application(request).registry.history)
    doc = {
        "event_types": [
            {**_definition_doc(versions[-1]), "versions": [v.version for v in versions]}
            for versions in history.values()
        ]
    }
    return LIST.reply(msgspec.convert(doc, ContractList))


@router.get(
    "/v1/contracts/{name}",
    summary="One event type's version history",
    responses=HISTORY.responses(401, 404, 503),
    dependencies=[requires()],
)
async def contract_history(request: Request, name: str) -> Response:
    """Every version of one event type, oldest first."""
    history = await run_in_threadpool(application(request).registry.history)
    if name not in history:
        raise UnknownEventTypeError(f"no event type {name!r} is registered")
    doc = {"name": name, "versions": [_definition_doc(v) for v in history[name]]}
    return HISTORY.reply(msgspec.convert(doc, ContractHistory))


async def _parse_contract_body(request: Request) -> tuple[str, dict[str, EventTypeDefinition]]:
    raw = await read_body(request, CONTRACT_BODY_LIMIT)
    try:
        doc = load_yaml(raw.decode())  # JSON is YAML too: one parser for both media types
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ContractDefinitionError(f"body is neither JSON nor YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ContractDefinitionError("expected a document with team and event_types")
    definitions = definitions_from_document(doc, "request body")
    return str(doc.get("team", "")), definitions


def _plan_doc(plan: ChangePlan) -> ContractPlan:
    doc = {
        "compatible": plan.compatible,
        "added": list(plan.added),
        "changed": [{"name": n, "version": v} for n, v in plan.changed],
        "unchanged": list(plan.unchanged),
        "violations": msgspec.to_builtins(plan.violations),
    }
    return msgspec.convert(doc, ContractPlan)


@router.post(
    "/v1/contracts/check",
    summary="Check proposed definitions without registering",
    openapi_extra=json_body(ContractDocument),
    responses=PLAN.responses(401, 403, 408, 413, 422, 503),
    dependencies=[requires(Role.CONTRACTS, Role.PRODUCER)],
)
async def check_contracts(request: Request) -> Response:
    """What registering this team's document would do; every violation is listed (a
    producer team's CI calls this with the same document)."""
    _team, definitions = await _parse_contract_body(request)
    plan = await run_in_threadpool(application(request).registry.plan, definitions, partial=True)
    return PLAN.reply(_plan_doc(plan))


@router.post(
    "/v1/contracts",
    summary="Register new definitions or versions",
    openapi_extra=json_body(ContractDocument),
    responses=REGISTERED.responses(401, 403, 408, 409, 413, 422, 503),
)
async def register_contracts(
    request: Request, key: Annotated[ApiKey, requires(Role.CONTRACTS)]
) -> Response:
    """Register a team's definitions (all or nothing): a ``contracts`` key registers and
    evolves only the event types its team owns, and a new type belongs to its team.
    An administrator may register for any team."""
    team, definitions = await _parse_contract_body(request)
    admin = key.has(Role.ADMIN)
    if not admin and team != key.team:
        raise PermissionDeniedError(
            f"a key of team {key.team!r} may not register the document of team {team!r}"
        )
    hw = application(request)
    plan = await run_in_threadpool(
        lambda: hw.registry.apply(definitions, partial=True, as_team=None if admin else key.team)
    )
    await run_in_threadpool(hw.refresh_contracts)
    return REGISTERED.reply(_plan_doc(plan), 201 if plan.added or plan.changed else 200)


class OwnerBody(msgspec.Struct, forbid_unknown_fields=True):
    """Body of a change of owner."""

    owner: Annotated[str, msgspec.Meta(min_length=1, description="The team that takes it")]


@router.put(
    "/v1/contracts/{name}/owner",
    summary="Give an event type to another team",
    responses=PLAN.responses(400, 401, 403, 404, 408, 413, 503),
    openapi_extra=json_body(OwnerBody),
    dependencies=[requires(Role.ADMIN)],
)
async def transfer_contract(request: Request, name: str) -> Response:
    """A new version of the type whose only change is its owner (administrators only)."""
    body = decode_json(await read_body(request, 4096), OwnerBody, "{'owner': <team>}")
    hw = application(request)
    plan = await run_in_threadpool(hw.registry.transfer, name, body.owner)
    await run_in_threadpool(hw.refresh_contracts)
    return PLAN.reply(_plan_doc(plan))

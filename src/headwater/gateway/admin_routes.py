"""Keys, for administrators: create, list and revoke API keys (``admin``)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from headwater.access.keys import ALL, OWNED, ApiKey
from headwater.access.roles import Role
from headwater.gateway._deps import application
from headwater.gateway._schemas import Answer, json_body
from headwater.gateway.answers import CreatedKey, KeyAnswer, KeyList
from headwater.gateway.bodies import decode_json, read_body
from headwater.gateway.security import requires

__all__ = ["router"]

router = APIRouter()


class NewKey(msgspec.Struct, forbid_unknown_fields=True):
    """Body of a key creation. The control plane checks the principal, roles, kind and
    rate (400 with what it refused); the schema states the same bounds."""

    principal: Annotated[
        str,
        msgspec.Meta(
            description="The team or service it belongs to",
            extra_json_schema={"pattern": "^[A-Za-z0-9_-]{1,64}$"},
        ),
    ]
    roles: Annotated[
        list[str],
        msgspec.Meta(extra_json_schema={"minItems": 1, "items": {"enum": [r.value for r in Role]}}),
    ]
    kind: Annotated[str, msgspec.Meta(extra_json_schema={"enum": ["team", "service"]})] = "team"
    event_types: list[str] = msgspec.field(default_factory=lambda: [OWNED])
    surfaces: list[str] = msgspec.field(default_factory=lambda: [ALL])
    rate_limit_eps: Annotated[float, msgspec.Meta(extra_json_schema={"exclusiveMinimum": 0})] = (
        200_000.0
    )
    burst: float | None = None
    description: Annotated[str, msgspec.Meta(extra_json_schema={"maxLength": 500})] = ""


CREATED = Answer(CreatedKey, "The key, with its secret (shown in this answer only)", 201)
LISTED = Answer(KeyList, "Every key with its roles and scope")
REVOKED = Answer(KeyAnswer, "The key, revoked")


@router.post(
    "/v1/admin/keys",
    summary="Create an API key (the secret is in this answer only)",
    status_code=201,
    responses=CREATED.responses(400, 401, 403, 408, 413),
    openapi_extra=json_body(NewKey),
)
async def create_key(request: Request, admin: Annotated[ApiKey, requires(Role.ADMIN)]) -> Response:
    """A new key with roles and scope; only its hash is stored."""
    body = decode_json(await read_body(request, 8192), NewKey, "a key's principal and roles")
    hw = application(request)
    secret, key = await run_in_threadpool(
        lambda: hw.keys.create(
            body.principal,
            roles=body.roles,
            kind=body.kind,
            event_types=tuple(body.event_types),
            surfaces=tuple(body.surfaces),
            rate_limit_eps=body.rate_limit_eps,
            burst=body.burst,
            description=body.description[:500],
            created_by=f"{admin.kind}:{admin.team} (key {admin.key_id})",
        )
    )
    return CREATED.reply(CreatedKey(api_key=secret, key=key), 201)


@router.get(
    "/v1/admin/keys",
    summary="Every API key with its roles and scope (never a secret)",
    responses=LISTED.responses(401, 403, 422),
    dependencies=[requires(Role.ADMIN)],
)
async def list_keys(request: Request, revoked: bool = False) -> Response:
    """Keys, with revoked ones if asked."""
    keys = await run_in_threadpool(application(request).keys.list, include_revoked=revoked)
    return LISTED.reply(KeyList(keys=keys))


@router.delete(
    "/v1/admin/keys/{key_id}",
    summary="Revoke an API key (every gateway refuses it within a second)",
    responses=REVOKED.responses(400, 401, 403),
    dependencies=[requires(Role.ADMIN)],
)
async def revoke_key(request: Request, key_id: str) -> Response:
    """Revoke a key; its dashboard sessions end with it."""
    key = await run_in_threadpool(application(request).keys.revoke, key_id)
    return REVOKED.reply(KeyAnswer(key=key))

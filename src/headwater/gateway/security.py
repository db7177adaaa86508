"""Who is calling, and may they: every route declares its roles where it is defined.

``requires(Role.READER)`` (or ``public()``) goes in a route's ``dependencies``. The
caller is found from ``Authorization: Bearer <key>`` (or ``X-API-Key``), or from the
dashboard's session cookie; it is looked up at most once a second per gateway, so a
revoked key stops working on every gateway within a second. The cookie is accepted on
reads only (GET, HEAD: the dashboard's data and its user lookup) and acts with the
roles the dashboard needs, operator and reader, never the rest of the key's
(``access.sessions.session_view``): a write route answers 401 to a cookie.
``check_policies`` refuses to build an app with a route that declares neither, and
``policy_table`` reads the declarations back (the OpenAPI shows them as each
operation's ``security``).

401 when there is no key, an unknown one or a revoked one; 403 when the key lacks the
role. Error messages name the role that is missing and never repeat the key.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import (
    APIKeyCookie,
    APIKeyHeader,
    HTTPAuthorizationCredentials,
    HTTPBearer,
    SecurityScopes,
)
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute

from headwater.access.keys import ApiKey
from headwater.access.roles import Role
from headwater.errors import AuthenticationError, ConfigurationError, PermissionDeniedError
from headwater.gateway._deps import application

__all__ = [
    "KEY_CACHE_S",
    "SESSION_COOKIE",
    "caller",
    "check_policies",
    "policy_table",
    "public",
    "requires",
]

#: How long a gateway trusts a key lookup: the bound on revocation, per gateway.
KEY_CACHE_S = 1.0
SESSION_COOKIE = "hw_session"
#: The methods a dashboard session may call with: it reads, and logs out (a public route).
_SESSION_METHODS = frozenset({"GET", "HEAD"})

_bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description="An API key")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKeyHeader")
_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    scheme_name="dashboardSession",
    description="Set by POST /dashboard/session with an operator key; good for reads "
    "only (GET), with the roles operator and reader (when the key holds them)",
)

Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
HeaderKey = Annotated[str | None, Depends(_header)]
Cookie = Annotated[str | None, Depends(_cookie)]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def _lookup(
    request: Request, kind: str, secret: str, find: Callable[[str], ApiKey]
) -> ApiKey:
    # One control-plane read per key (or session) and second at most, per gateway. The
    # dependencies are coroutines: a cached key costs no thread hop, and only the read
    # goes to a worker thread (a slow control plane never stalls the event loop).
    cache: dict[str, tuple[float, ApiKey | AuthenticationError]] = request.app.state.key_cache
    slot = f"{kind}:{_digest(secret)}"
    now = time.monotonic()
    hit = cache.get(slot)
    if hit is None or now - hit[0] >= KEY_CACHE_S:
        found: ApiKey | AuthenticationError
        try:
            found = await run_in_threadpool(find, secret)
        except AuthenticationError as exc:
            found = exc
        if len(cache) > 10_000:
            cache.clear()  # a flood of made-up keys cannot grow it without bound
        cache[slot] = hit = (now, found)
    if isinstance(hit[1], AuthenticationError):
        raise AuthenticationError(str(hit[1]))
    return hit[1]


async def caller(request: Request, bearer: Bearer, header_key: HeaderKey, cookie: Cookie) -> ApiKey:
    """The key of the request: a bearer key, an ``X-API-Key``, or a dashboard session."""
    hw = application(request)
    if bearer is not None and bearer.credentials:
        return await _lookup(request, "key", bearer.credentials, hw.keys.authenticate)
    if header_key:
        return await _lookup(request, "key", header_key, hw.keys.authenticate)
    if cookie:
        if request.method not in _SESSION_METHODS:
            raise AuthenticationError(
                "a dashboard session only reads: send an API key (as 'Authorization: Bearer <key>')"
            )
        return await _lookup(request, "session", cookie, hw.sessions.authenticate)
    raise AuthenticationError("missing API key (send it as 'Authorization: Bearer <key>')")


Caller = Annotated[ApiKey, Depends(caller)]


async def _authorize(scopes: SecurityScopes, key: Caller) -> ApiKey:
    if not scopes.scopes:
        return key  # any valid key
    needed = [Role(s) for s in scopes.scopes]
    if not any(key.has(role) for role in needed):
        held = ", ".join(key.roles) or "none"
        wanted = " or ".join(r.value for r in needed)
        raise PermissionDeniedError(
            f"this needs the role {wanted}; the key {key.key_id} of {key.team} has: {held}"
        )
    return key


def requires(*roles: Role) -> Any:
    """The dependency of a route that needs one of ``roles`` (``admin`` always passes;
    no roles: any valid key)."""
    return Security(_authorize, scopes=[r.value for r in roles])


async def _public() -> None:
    """A route anyone may call: liveness, the dashboard's page and its login."""


def public() -> Any:
    """The dependency of a route that needs no key."""
    return Depends(_public)


def _declared(route: APIRoute) -> tuple[str, ...] | None:
    """The roles a route declares (``()``: any key), ``("public",)``, or None."""
    for dependency in route.dependant.dependencies:
        if dependency.call is _public:
            return ("public",)
        if dependency.call is _authorize:
            return tuple(dependency.own_oauth_scopes or ()) or ("any key",)
    return None


def _routes(routes: Sequence[BaseRoute]) -> Iterator[BaseRoute]:
    # Included routers are kept whole in ``app.routes`` (FastAPI resolves them lazily):
    # walk into them; none of ours adds a prefix or dependencies when included.
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)
        else:
            yield route


def policy_table(app: FastAPI) -> dict[tuple[str, str], tuple[str, ...]]:
    """Each (method, path) with the roles it needs, as the routes declare them; paths as
    the OpenAPI document writes them (``{user_id}``, not ``{user_id:any_text}``)."""
    table: dict[tuple[str, str], tuple[str, ...]] = {}
    for route in _routes(app.routes):
        if isinstance(route, APIRoute):
            declared = _declared(route)
            for method in sorted((route.methods or set()) - {"HEAD"}):
                table[method, route.path_format] = declared or ()
    return table


def check_policies(app: FastAPI) -> None:
    """Refuse an app with a route that declares no policy (secure by default), or with a
    route the policy table cannot see (a bare Starlette route or mount)."""
    routes = list(_routes(app.routes))
    missing: Sequence[str] = [
        f"{sorted(route.methods or ())} {route.path}"
        for route in routes
        if isinstance(route, APIRoute) and _declared(route) is None
    ]
    if missing:
        raise ConfigurationError(
            "routes without a declared policy (add requires(...) or public()): "
            + ", ".join(missing)
        )
    others = [str(getattr(r, "path", r)) for r in routes if not isinstance(r, APIRoute)]
    if others:
        raise ConfigurationError(f"routes outside the policy table: {', '.join(others)}")

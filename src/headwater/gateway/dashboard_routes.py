"""The dashboard: its page (anyone may load it; it holds no data) and its login.

An operator gives a key once; the answer sets an HttpOnly, SameSite=Strict cookie
that stands for the key (``access.sessions``), and the page's data requests carry
it. Every data endpoint the page calls needs the ``operator`` role like any other
caller, so without a session the page shows nothing but the login.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

import msgspec
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from headwater.access.roles import Role
from headwater.errors import PermissionDeniedError
from headwater.gateway._deps import application
from headwater.gateway._schemas import Answer, json_body
from headwater.gateway.answers import LoggedOut, SessionAnswer
from headwater.gateway.bodies import decode_json, read_body
from headwater.gateway.security import SESSION_COOKIE, public

__all__ = ["router"]

router = APIRouter()


class Login(msgspec.Struct, forbid_unknown_fields=True):
    """Body of a dashboard login."""

    key: Annotated[str, msgspec.Meta(description="An API key with the operator role")]


SESSION = Answer(SessionAnswer, "Logged in: the session cookie is set")
LOGOUT = Answer(LoggedOut, "Logged out: the session cookie is cleared")


@router.get(
    "/dashboard",
    response_class=HTMLResponse,
    summary="The operator's page (its data needs an operator session)",
    dependencies=[public()],
)
async def dashboard() -> HTMLResponse:
    """The operator's page: ingestion, freshness, lag, dead letters, deletions, users."""
    page = resources.files("headwater.gateway") / "static" / "dashboard.html"
    return HTMLResponse(
        page.read_text(encoding="utf-8"),
        headers={
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
            "X-Frame-Options": "DENY",
            "Cache-Control": "no-store",
        },
    )


@router.post(
    "/dashboard/session",
    summary="Log in to the dashboard with an operator key",
    responses=SESSION.responses(400, 401, 403, 408, 413),
    openapi_extra=json_body(Login),
    dependencies=[public()],
)
async def login(request: Request) -> Response:
    """Check the key (it must carry ``operator``); set the session cookie."""
    body = decode_json(await read_body(request, 1024), Login, "{'key': <operator key>}")
    hw = application(request)
    key = await run_in_threadpool(hw.keys.authenticate, body.key)
    if not key.has(Role.OPERATOR):
        raise PermissionDeniedError(
            f"the dashboard needs the role operator; the key {key.key_id} of {key.team} has: "
            + ", ".join(key.roles)
        )
    token = await run_in_threadpool(hw.sessions.create, key)
    response = SESSION.reply(SessionAnswer(team=key.team, roles=list(key.roles)))
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(hw.sessions.ttl_s),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.delete(
    "/dashboard/session",
    summary="Log out of the dashboard",
    responses=LOGOUT.responses(),
    dependencies=[public()],
)
async def logout(request: Request) -> Response:
    """End the session (its cookie stops working on every gateway at once)."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await run_in_threadpool(application(request).sessions.end, token)
    response = LOGOUT.reply(LoggedOut(logged_out=True))
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response

"""The dashboard: its page (anyone may load it; it holds no data) and its login.

An operator gives a key once; the answer sets an HttpOnly, SameSite=Strict cookie
that stands for the key (``access.sessions``), and the page's data requests carry
it. Every data endpoint the page calls needs the ``operator`` role like any other
caller, so without a session the page shows nothing but the login.

The page asks for two documents: the present (``/v1/dashboard/live``, every 2 s,
computed at most once per 2 s whatever the number of tabs) and the last hour
(``/v1/dashboard/trends``, the ring each gateway samples on its own clock; a tab that
already has the latest sample gets a 304).
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

import msgspec
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from headwater.access.roles import Role
from headwater.access.sessions import session_view
from headwater.application import Application
from headwater.errors import PermissionDeniedError
from headwater.gateway._deps import application
from headwater.gateway._schemas import Answer, json_body
from headwater.gateway.answers import LoggedOut, SessionAnswer
from headwater.gateway.bodies import decode_json, read_body
from headwater.gateway.dashboard_view import LiveView
from headwater.gateway.observe_answers import DashboardLive, DashboardTrends
from headwater.gateway.security import SESSION_COOKIE, public, requires
from headwater.gateway.trends import ResponseCounts, TrendRing

__all__ = ["router", "start_dashboard"]

router = APIRouter()


def start_dashboard(app: FastAPI, application_: Application) -> TrendRing:
    """The app's live view and its sampled hour (started now; the caller stops it)."""
    responses: ResponseCounts = app.state.responses  # counted by the request middleware
    ring = TrendRing(
        application_, interval_s=application_.settings.dashboard_sample_s, responses=responses
    )
    app.state.trends = ring
    app.state.live_view = LiveView(application_)
    ring.start()
    return ring


@router.get(
    "/v1/dashboard/live",
    summary="The dashboard's present: ingestion, freshness, lag, deletions, features",
    responses=Answer(DashboardLive, "The present, at most 2 s old").responses(401, 403, 503),
    dependencies=[requires(Role.OPERATOR)],
)
async def live(request: Request) -> Response:
    """Ingestion per team (60 s), freshness against budget (5 min), lag, dead letters,
    open erasure requests with their stores and the latest completed, the feature
    definitions: computed at most once per 2 s for every caller."""
    view: LiveView = request.app.state.live_view
    body = await run_in_threadpool(view.encoded)
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


@router.get(
    "/v1/dashboard/trends",
    summary="The dashboard's last hour, sampled by this gateway at a fixed interval",
    responses={
        **Answer(DashboardTrends, "The samples of the last hour").responses(401, 403),
        304: {"description": "The caller's copy (If-None-Match) is the latest sample"},
    },
    dependencies=[requires(Role.OPERATOR)],
)
async def trends(request: Request) -> Response:
    """Per sample: ingest and rejection rate per team, lag per group, freshness p50/p99
    per event type, erasure requests open, publish latency and 429/503 rates; and the
    nightly batch's last runs. ETag per sample: a tab that has it gets a 304."""
    ring: TrendRing = request.app.state.trends
    body, etag = ring.encoded()
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


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
    """The operator's page: the last hour in small charts, the nightly batch's runs,
    ingestion, freshness, lag, dead letters, deletions, feature definitions, users."""
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
    # The roles the session acts with (operator, and reader when the key has it).
    response = SESSION.reply(SessionAnswer(team=key.team, roles=list(session_view(key).roles)))
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

"""The ASGI application: every route of the gateway, each with its declared policy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from headwater import __version__
from headwater.application import Application
from headwater.config import Settings
from headwater.gateway._errors import install_error_handlers, json_response
from headwater.gateway._schemas import errors, install_openapi
from headwater.gateway.admin_routes import router as admin_router
from headwater.gateway.contract_routes import router as contract_router
from headwater.gateway.dashboard_routes import router as dashboard_router
from headwater.gateway.dashboard_routes import start_dashboard
from headwater.gateway.deletion_routes import router as deletion_router
from headwater.gateway.observe_routes import router as observe_router
from headwater.gateway.publish_routes import router as publish_router
from headwater.gateway.read_routes import router as read_router
from headwater.gateway.reco_routes import router as reco_router
from headwater.gateway.security import check_policies, requires
from headwater.gateway.telemetry import BACKENDS, install_request_telemetry

__all__ = ["create_app"]


def create_app(
    application_: Application | None = None,
    *,
    settings: Settings | None = None,
    extra: Callable[[FastAPI], None] | None = None,
) -> FastAPI:
    """The gateway app over ``application_`` (built from ``settings`` when not given).

    When the app builds its application itself it also closes it on shutdown. Every
    route declares who may call it (``gateway.security``): an app with a route that
    does not is refused here, ``extra`` routes included.
    """
    owned = application_ is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.application is None:
            app.state.application = Application(settings or Settings.from_env())
        hw: Application = app.state.application
        BACKENDS.sources.append(hw)
        dashboard = start_dashboard(app, hw)
        yield
        dashboard.stop()
        BACKENDS.sources.remove(hw)
        if owned:
            hw.close()

    app = FastAPI(
        title="headwater",
        version=__version__,
        lifespan=lifespan,
        description="Publish interaction signals through one contract; read fresh "
        "features; erase users with proof. Every operation names the roles it needs "
        "(its `security`); send an API key as `Authorization: Bearer <key>`.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.application = application_
    app.state.key_cache = {}
    install_error_handlers(app)
    for router in (
        publish_router,
        contract_router,
        read_router,
        reco_router,
        deletion_router,
        observe_router,
        dashboard_router,
        admin_router,
    ):
        app.include_router(router)
    _documentation(app)
    install_openapi(app)
    install_request_telemetry(app)
    if extra is not None:
        extra(app)
    check_policies(app)
    return app


def _documentation(app: FastAPI) -> None:
    @app.get(
        "/openapi.json",
        summary="This API's OpenAPI document",
        responses={
            200: {"description": "OpenAPI 3.1", "content": {"application/json": {}}},
            **errors(401),
        },
        dependencies=[requires()],
    )
    async def openapi() -> Response:
        return json_response(app.openapi())

    @app.get(
        "/docs",
        summary="This API's documentation",
        response_class=HTMLResponse,
        responses={200: {"content": {"text/html": {}}, "description": "Swagger UI"}, **errors(401)},
        dependencies=[requires()],
    )
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="headwater API")

"""The ASGI application: ingestion, contracts, and (as later parts register) reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response

from headwater import __version__
from headwater.config import Settings
from headwater.gateway._errors import install_error_handlers, json_response
from headwater.gateway.deletion_routes import router as deletion_router
from headwater.gateway.ingest_routes import router as ingest_router
from headwater.gateway.observe_routes import router as observe_router
from headwater.gateway.read_routes import router as read_router
from headwater.gateway.reco_routes import router as reco_router
from headwater.gateway.services import GatewayServices
from headwater.gateway.telemetry import BACKENDS, install_request_ids

__all__ = ["create_app"]


def create_app(
    services: GatewayServices | None = None,
    *,
    settings: Settings | None = None,
    extra: Callable[[FastAPI], None] | None = None,
) -> FastAPI:
    """The gateway app over ``services`` (opened from ``settings`` when not given).

    When the app opens its services itself it also closes them on shutdown.
    """
    owned = services is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.services is None:
            app.state.services = GatewayServices(settings or Settings.from_env())
        svc: GatewayServices = app.state.services
        BACKENDS.sources.append(svc)
        yield
        BACKENDS.sources.remove(svc)
        if owned:
            svc.close()

    app = FastAPI(
        title="headwater",
        version=__version__,
        lifespan=lifespan,
        description="Publish interaction signals through one contract; read fresh "
        "features; erase users with proof.",
    )
    app.state.services = services
    app.state.key_cache = {}
    install_error_handlers(app)
    app.include_router(ingest_router)
    app.include_router(read_router)
    app.include_router(reco_router)
    app.include_router(deletion_router)
    app.include_router(observe_router)
    install_request_ids(app)

    @app.get("/v1/health", summary="Liveness and where the backends are")
    async def health(request: Request) -> Response:
        svc: GatewayServices = request.app.state.services
        return json_response({"status": "ok", "version": __version__, **svc.describe()})

    if extra is not None:
        extra(app)
    return app

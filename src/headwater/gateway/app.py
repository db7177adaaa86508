"""The ASGI application: ingestion, contracts, and (as later parts register) reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import Response

from headwater import __version__
from headwater.application import Application
from headwater.config import Settings
from headwater.gateway._deps import application
from headwater.gateway._errors import install_error_handlers, json_response
from headwater.gateway.deletion_routes import router as deletion_router
from headwater.gateway.ingest_routes import router as ingest_router
from headwater.gateway.observe_routes import router as observe_router
from headwater.gateway.read_routes import router as read_router
from headwater.gateway.reco_routes import router as reco_router
from headwater.gateway.telemetry import BACKENDS, install_request_ids

__all__ = ["create_app"]


def create_app(
    application_: Application | None = None,
    *,
    settings: Settings | None = None,
    extra: Callable[[FastAPI], None] | None = None,
) -> FastAPI:
    """The gateway app over ``application_`` (built from ``settings`` when not given).

    When the app builds its application itself it also closes it on shutdown.
    """
    owned = application_ is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.application is None:
            app.state.application = Application(settings or Settings.from_env())
        hw: Application = app.state.application
        BACKENDS.sources.append(hw)
        yield
        BACKENDS.sources.remove(hw)
        if owned:
            hw.close()

    app = FastAPI(
        title="headwater",
        version=__version__,
        lifespan=lifespan,
        description="Publish interaction signals through one contract; read fresh "
        "features; erase users with proof.",
    )
    app.state.application = application_
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
        hw = application(request)
        limits = msgspec.to_builtins(hw.ingestor.limits)
        return json_response(
            {"status": "ok", "version": __version__, **hw.describe(), "limits": limits}
        )

    if extra is not None:
        extra(app)
    return app

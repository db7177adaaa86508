"""``headwater serve``: the HTTP gateway on its own (scale it behind a load balancer)."""

from __future__ import annotations

from typing import Annotated

import typer

from headwater.cli._common import HomeOption, freeze_startup, settings

__all__ = ["register"]


def serve(
    home: HomeOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Run the gateway: POST /v1/signals, contracts, health and OpenAPI at /docs."""
    import uvicorn

    from headwater.application import Application
    from headwater.gateway.app import create_app
    from headwater.gateway.server import server_config

    hw = Application(settings(home))
    try:
        hw.check_ready()  # an unreachable backend: one line naming it, in seconds
    except BaseException:
        hw.close()
        raise
    app = create_app(hw)
    freeze_startup()
    try:
        uvicorn.Server(server_config(app, host=host, port=port, log_level=log_level)).run()
    finally:
        hw.close()


def register(app: typer.Typer) -> None:
    """Add the serve command."""
    app.command()(serve)

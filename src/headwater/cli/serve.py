"""``headwater serve``: the HTTP gateway on its own (scale it behind a load balancer)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Annotated

import typer

from headwater.cli._common import HomeOption, freeze_startup, settings

__all__ = ["register"]

log = logging.getLogger("headwater.gateway")


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

    class Server(uvicorn.Server):
        """uvicorn's server, closing the application once it has shut down: uvicorn
        raises a SIGTERM or SIGINT it took again when it leaves ``capture_signals``,
        which ends the process before any ``finally`` after ``run()``."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                try:
                    yield
                finally:
                    stopped()

    done: list[bool] = []

    def stopped() -> None:
        if not done:
            done.append(True)
            hw.close()
            log.info("gateway stopped", extra={"port": port})

    try:
        Server(server_config(app, host=host, port=port, log_level=log_level)).run()
    finally:
        stopped()


def register(app: typer.Typer) -> None:
    """Add the serve command."""
    app.command()(serve)

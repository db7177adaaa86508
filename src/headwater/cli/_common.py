"""Options and helpers shared by the CLI's commands."""

from __future__ import annotations

import gc
import threading
from typing import TYPE_CHECKING, Annotated

import msgspec
import typer

from headwater.config import Settings

if TYPE_CHECKING:
    from headwater.application import Application

__all__ = [
    "ControlUrl",
    "HomeOption",
    "MetricsHost",
    "MetricsPort",
    "application",
    "serve_metrics",
    "settings",
]

HomeOption = Annotated[
    str | None,
    typer.Option(
        "--home",
        envvar="HEADWATER_HOME",
        help="Data directory of the embedded backends (default ./.headwater).",
    ),
]
ControlUrl = Annotated[
    str | None,
    typer.Option(
        "--control",
        envvar="HEADWATER_CONTROL_URL",
        help="Control-plane URL: sqlite:///path or postgresql://...",
    ),
]

MetricsPort = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="Serve this process's Prometheus metrics at /metrics on this port (scraped "
        "with an operator key as the bearer token). Default: none.",
    ),
]
MetricsHost = Annotated[str, typer.Option("--metrics-host", help="Interface of --metrics-port.")]


def settings(home: str | None) -> Settings:
    """Settings for the chosen home directory."""
    return Settings.from_env(home)


def application(
    home: str | None, *, control: str | None = None, bus: str | None = None
) -> Application:
    """The application of the chosen home, with the control plane or bus a command's
    ``--control`` or ``--bus`` names instead of the settings' (close it when done)."""
    from headwater.application import Application

    cfg = settings(home)
    if control:
        cfg = msgspec.structs.replace(cfg, control_url=control)
    if bus:
        cfg = msgspec.structs.replace(cfg, bus_url=bus)
    return Application(cfg)


def serve_metrics(app_: Application, host: str, port: int | None) -> None:
    """This process's ``/metrics`` on ``port`` (none when None), for operator keys; it
    closes with the application."""
    if port is None:
        return
    from headwater.access.roles import Role
    from headwater.errors import PermissionDeniedError
    from headwater.metrics.exposition import MetricsEndpoint

    def authorize(secret: str | None) -> None:
        key = app_.keys.authenticate(secret)
        if not key.has(Role.OPERATOR):
            raise PermissionDeniedError(
                f"this needs the role operator; the key {key.key_id} of {key.team} has: "
                f"{', '.join(key.roles) or 'none'}"
            )

    endpoint = MetricsEndpoint(authorize, host=host, port=port)
    app_.own("metrics endpoint", endpoint.close)


def freeze_startup() -> None:
    """Take what a long-running command built to start (modules, the app, connections)
    out of the cyclic collector's reach (``gc.freeze``): it lives as long as the process,
    and a full collection walked all of it each time, about 70,000 objects in the
    gateway (45 ms per full collection under load, 2 ms once frozen; every request
    waits for it)."""
    gc.collect()
    gc.freeze()


#: How often a command's main thread wakes while it waits to be stopped.
STOP_POLL_S = 0.25


def wait_until_stopped(stop: threading.Event) -> None:
    """Block the main thread until ``stop`` is set (by the SIGTERM or SIGINT handler),
    waking every ``STOP_POLL_S``. The kernel hands a signal to any thread of the
    process; Python runs its handler in the main thread, and only when that thread next
    runs: one blocked in a wait without a timeout never did, and ``headwater up`` then
    ignored a SIGTERM that another thread (the API's, a consumer's) had taken."""
    while not stop.wait(STOP_POLL_S):
        pass

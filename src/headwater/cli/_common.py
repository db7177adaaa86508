"""Options and helpers shared by the CLI's commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec
import typer

from headwater.config import Settings

if TYPE_CHECKING:
    from headwater.application import Application

__all__ = ["ControlUrl", "HomeOption", "application", "settings"]

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

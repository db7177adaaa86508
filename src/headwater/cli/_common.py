"""Options and helpers shared by the CLI's commands."""

from __future__ import annotations

from typing import Annotated

import typer

from headwater.config import Settings
from headwater.contract.registry import ContractRegistry
from headwater.control import open_control_database

__all__ = ["ControlUrl", "HomeOption", "open_registry", "settings"]

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


def open_registry(home: str | None, control: str | None) -> ContractRegistry:
    """The contract registry at the chosen control plane."""
    url = control or settings(home).control_url
    return ContractRegistry(open_control_database(url))

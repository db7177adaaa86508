"""``headwater features``: the declared features (point-in-time training sets: ``history``)."""

from __future__ import annotations

import typer

from headwater.cli import feature_history

__all__ = ["app"]

app = typer.Typer(help="The declared features and their history.", no_args_is_help=True)
feature_history.register(app)

"""``headwater features``: the declared features: versions (``plan``, ``apply``), backfills,
rebuilds, ``status``, and point-in-time training sets (``history``)."""

from __future__ import annotations

import typer

from headwater.cli import feature_history, feature_versions

__all__ = ["app"]

app = typer.Typer(
    help="The declared features: versions, backfills, rebuilds and history.", no_args_is_help=True
)
feature_versions.register(app)
feature_history.register(app)

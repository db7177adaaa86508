"""The ``headwater`` command line."""

from __future__ import annotations

import typer

from headwater._extras import extra_for
from headwater.cli import archive as archive_cli
from headwater.cli import batch as batch_cli
from headwater.cli import (
    bus,
    consume,
    contracts,
    deletions,
    demo,
    feature_versions,
    producers,
    serve,
    status,
)
from headwater.errors import HeadwaterError
from headwater.logs import configure_logging

__all__ = ["app", "main"]

app = typer.Typer(
    name="headwater",
    help="One contract, one bus, fresh features and provable erasure for interaction signals.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(contracts.app, name="contracts")
app.add_typer(bus.bus_app, name="bus")
app.add_typer(bus.dlq_app, name="dlq")
app.add_typer(producers.app, name="producers")
app.add_typer(producers.keys_app, name="keys")
app.add_typer(consume.app, name="consume")
app.add_typer(batch_cli.app, name="batch")
app.add_typer(archive_cli.app, name="archive")
features_app = typer.Typer(help="Feature definitions: versions, backfills.", no_args_is_help=True)
feature_versions.register(features_app)
app.add_typer(features_app, name="features")
serve.register(app)
status.register(app)
deletions.register(app)
demo.register(app)


def main() -> None:
    """Entry point: run the CLI, turning headwater errors into a message and exit code 1."""
    configure_logging()
    try:
        app()
    except HeadwaterError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    except ModuleNotFoundError as exc:
        # An optional package that is not installed: name the extra that brings it.
        missing = extra_for(exc)
        if missing is None:
            raise
        typer.echo(f"error: {missing}", err=True)
        raise SystemExit(1) from None

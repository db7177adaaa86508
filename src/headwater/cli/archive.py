"""``headwater archive``: the Delta archive's upkeep (its consumer is ``consume archive``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from headwater._time import format_time
from headwater.cli._common import HomeOption, settings

__all__ = ["app"]

app = typer.Typer(help="Inspect and maintain the Delta Lake archive.", no_args_is_help=True)


@app.command()
def vacuum(
    home: HomeOption = None,
    retention: Annotated[
        str | None,
        typer.Option(help="Override the retention, e.g. 7d or 0 (default from settings)."),
    ] = None,
) -> None:
    """Remove for good the files deleted (erasures, compactions) longer than the retention ago."""
    from headwater._duration import parse_duration
    from headwater.application import Application

    hours = None
    if retention is not None:
        hours = (
            0.0
            if retention.strip() in ("0", "0s", "0h")
            else (parse_duration(retention, "--retention") / 3600)
        )
    with Application(settings(home)) as app_:
        report = app_.open_archive_consumer().vacuum(hours)
    typer.echo(
        f"vacuumed at {format_time(report.vacuumed_at)} with retention "
        f"{report.retention_hours:g}h: {len(report.removed_files)} file(s) removed, "
        f"expired log entries cleaned"
    )
    for name in report.removed_files:
        typer.echo(f"  - {name}")


@app.command()
def erasure(
    request_id: str,
    home: HomeOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What the archive recorded for an erasure, and whether the old files are gone yet."""
    from headwater.application import Application
    from headwater.archive.ledger import ErasureLedger

    with Application(settings(home)) as app_:
        cfg = app_.archive_settings
        # Read while the application is open: the ledger is the archive's, of its settings.
        ledger = ErasureLedger(cfg.url, storage_options=cfg.storage_options)
        entry = ledger.erasure(request_id)
        removed = ledger.physically_removed_at(entry) if entry is not None else None
    if entry is None:
        typer.echo(f"no erasure {request_id} recorded in the archive", err=True)
        raise typer.Exit(1)
    doc = {
        "request_id": entry.request_id,
        "partitions": entry.partitions,
        "table_version": entry.table_version,
        "rows_removed": entry.rows_removed,
        "erased_at": format_time(entry.erased_at),
        "physically_removed_at": format_time(removed) if removed else None,
    }
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    for key, value in doc.items():
        typer.echo(f"{key:>22}: {value}")
    if removed is None:
        typer.echo("old files are still on storage: a vacuum after the retention removes them")

"""``headwater consume archive`` and ``headwater archive``: the Delta archive and its upkeep."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from headwater.cli._common import HomeOption, settings

__all__ = ["app", "archive"]

app = typer.Typer(help="Inspect and maintain the Delta Lake archive.", no_args_is_help=True)


def archive(
    home: HomeOption = None,
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Exit once caught up (for jobs and tests).")
    ] = False,
    flush_rows: Annotated[
        int | None, typer.Option(help="Rows per Delta commit (default 50000).")
    ] = None,
    flush_seconds: Annotated[
        float | None, typer.Option(help="Longest wait to fill a commit (default 5s).")
    ] = None,
) -> None:
    """The archive consumer: every accepted signal into the Delta table, by event date."""
    import msgspec

    from headwater.archive.runtime import archive_runtime
    from headwater.archive.settings import ArchiveSettings

    cfg = settings(home)
    archive_cfg = ArchiveSettings.from_env(cfg)
    changes: dict[str, object] = {}
    if flush_rows is not None:
        changes["flush_rows"] = max(1, flush_rows)
    if flush_seconds is not None:
        changes["flush_seconds"] = max(0.0, flush_seconds)
    if changes:
        archive_cfg = msgspec.structs.replace(archive_cfg, **changes)
    runtime = archive_runtime(cfg, archive=archive_cfg)
    if until_idle:
        runtime.poll_timeout = 1.0
    runtime.run(idle_exit=until_idle)


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
    from headwater.archive.runtime import open_archive
    from headwater.archive.settings import ArchiveSettings

    consumer = open_archive(ArchiveSettings.from_env(settings(home)))
    hours = None
    if retention is not None:
        hours = (
            0.0
            if retention.strip() in ("0", "0s", "0h")
            else (parse_duration(retention, "--retention") / 3600)
        )
    report = consumer.vacuum(hours)
    typer.echo(
        f"vacuumed at {report.vacuumed_at.isoformat()} with retention "
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
    from headwater.archive.ledger import ErasureLedger
    from headwater.archive.settings import ArchiveSettings

    cfg = ArchiveSettings.from_env(settings(home))
    ledger = ErasureLedger(cfg.url, storage_options=cfg.storage_options)
    entry = ledger.erasure(request_id)
    if entry is None:
        typer.echo(f"no erasure {request_id} recorded in the archive", err=True)
        raise typer.Exit(1)
    removed = ledger.physically_removed_at(entry.erased_at)
    doc = {
        "request_id": entry.request_id,
        "partitions": entry.partitions,
        "table_version": entry.table_version,
        "rows_removed": entry.rows_removed,
        "erased_at": entry.erased_at.isoformat(),
        "physically_removed_at": removed.isoformat() if removed else None,
    }
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    for key, value in doc.items():
        typer.echo(f"{key:>22}: {value}")
    if removed is None:
        typer.echo("old files are still on storage: a vacuum after the retention removes them")

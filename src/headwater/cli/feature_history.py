"""``headwater features history``: a point-in-time training set from a table of labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from headwater.cli._common import ControlUrl, HomeOption, settings

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``history`` to the ``features`` group."""
    app.command()(history)


def history(
    labels: Annotated[
        Path,
        typer.Argument(
            help="Labels: a .parquet, .csv or .arrow file with user_id, timestamp, optional "
            "item_id and any label columns."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the training set (Parquet).")],
    home: HomeOption = None,
    control: ControlUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Each label row with the streaming features as they were at its timestamp (replayed
    from the archive through the consumer's own pass) and the batch features of the last
    batch run completed before it, each with its as_of. Erased users are left out."""
    import msgspec

    from headwater.application.training import historical_features

    if out.suffix.lower() not in (".parquet", ".pq"):
        raise typer.BadParameter(f"--out: expected a .parquet file, got {out}")
    cfg = settings(home)
    if control:
        cfg = msgspec.structs.replace(cfg, control_url=control)
    report = historical_features(labels, settings=cfg, out=out)
    if as_json:
        typer.echo(json.dumps(vars(report), indent=2))
        return
    typer.echo(
        f"{report.rows:,} row(s) written to {report.out} in {report.seconds:.1f}s "
        f"({report.labels:,} label(s), {report.users:,} user(s), "
        f"{report.signals:,} archived signal(s) replayed)"
    )
    if report.erased_labels:
        typer.echo(
            f"left out: {report.erased_labels:,} label(s) of {report.erased_users:,} erased user(s)"
        )
    typer.echo(
        f"features: {', '.join(report.features)}; batch rows from {report.batch_runs} run(s)"
    )

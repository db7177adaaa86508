"""``headwater status``: every consumer instance and every group's lag, from anywhere."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from headwater.cli._common import HomeOption, application

__all__ = ["register"]


def status(
    home: HomeOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Each consumer group: its lag, and each running instance with its partitions (and
    their generations), records applied, fenced batches and last commit."""
    with application(home) as app_:
        doc = app_.status()
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    features = doc["features"]
    assert isinstance(features, dict)
    typer.echo(f"feature definitions: version {features['version']}")
    for run in features["backfills"]:
        progress = run["progress"]
        typer.echo(
            f"  {run['kind']} {run['id']}: {run['state']}, "
            f"{progress.get('users_done', 0)}/{progress.get('users_total', '?')} users, "
            f"taken over on {len(run['handed_over'])}/{len(run['positions']) or '?'} partitions"
        )
    for group in doc["groups"]:  # type: ignore[attr-defined]
        instances = group["instances"]
        typer.echo(
            f"{group['group']}: lag {group['lag_events']} events "
            f"({group['lag_seconds']:.1f}s), {len(instances)} instance(s)"
        )
        for i in instances:
            held = ",".join(f"{p}@{g}" for p, g in i["partitions"].items()) or "none"
            typer.echo(
                f"  {i['member']:<32} {i['host']}:{i['pid']:<7} partitions {held}  "
                f"records {i['records']}  fenced {i['fenced_batches']}  "
                f"last commit {i['last_commit_at'] or '-'}"
            )


def register(root: typer.Typer) -> None:
    """Add ``status`` to the CLI."""
    root.command()(status)

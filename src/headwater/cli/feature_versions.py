"""``headwater features plan|apply|status``: feature definitions as versioned documents.

The commands are added to the ``features`` group by :func:`register`, so that other
``features`` commands can live in modules of their own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from headwater.cli._common import ControlUrl, HomeOption, application
from headwater.features.spec import load_features

__all__ = ["register"]

FileArg = Annotated[Path, typer.Argument(help="A features file (YAML: 'features: [...]').")]


def plan(file: FileArg, home: HomeOption = None, control: ControlUrl = None) -> None:
    """Show what registering FILE would change: added, removed and changed features, and
    which changes are compatible and which need a backfill from the archive."""
    proposed = load_features(file)
    with application(home, control=control) as app_:
        versions = app_.feature_versions
        current = versions.current()
        result = versions.plan(proposed)
    version = current.version if current else 0
    if result.empty:
        typer.echo(f"unchanged: {file} is version {version}")
        return
    typer.echo(f"version {version} -> {version + 1}:")
    for line in result.describe():
        typer.echo(line)
    backfills = result.backfills
    typer.echo(
        f"backfill needed: {', '.join(backfills)}" if backfills else "compatible: no backfill"
    )


def apply(
    file: FileArg,
    home: HomeOption = None,
    control: ControlUrl = None,
    no_backfill: Annotated[
        bool,
        typer.Option(
            "--no-backfill",
            help="New and changed features start empty at the switch instead of being "
            "recomputed from the archive.",
        ),
    ] = False,
) -> None:
    """Register FILE as the next version of the feature definitions (all or nothing).
    Running consumers and readers switch to it within a second, without a restart."""
    proposed = load_features(file)
    with application(home, control=control) as app_:
        result, registered = app_.feature_versions.apply(
            proposed, backfill=not no_backfill, source=str(file)
        )
    if registered is None:
        typer.echo("unchanged: nothing registered")
        return
    for line in result.describe():
        typer.echo(line)
    typer.echo(f"registered version {registered.version}")
    if registered.backfilling:
        typer.echo(f"backfilling: {', '.join(registered.backfilling)}")


def status(
    home: HomeOption = None,
    control: ControlUrl = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The current version, each feature's definition version and state (with backfill
    progress), and where each consumer group switched to the version."""
    with application(home, control=control) as app_:
        doc = app_.features_status()
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(f"feature definitions: version {doc['version']}")
    definitions = doc["definitions"]
    assert isinstance(definitions, dict)
    for key, info in definitions.items():
        extra = ""
        if info.get("users_total"):
            extra = f" {info.get('users_done', 0)}/{info['users_total']} users"
        typer.echo(f"  {key:<32} {info['state']}{extra}")
    switches = doc["switches"]
    assert isinstance(switches, list)
    for switch in switches:
        held = ",".join(f"{p}@{o}" for p, o in switch["positions"].items())
        typer.echo(f"  switched: group {switch['group']} at {held} ({switch['switched_at']})")


def register(group: typer.Typer) -> None:
    """Add ``plan``, ``apply`` and ``status`` to a ``features`` command group."""
    group.command()(plan)
    group.command()(apply)
    group.command()(status)

"""``headwater features plan|apply|backfill|rebuild|status``: versioned feature definitions.

The commands are added to the ``features`` group by :func:`register`, so that other
``features`` commands can live in modules of their own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from headwater.cli._common import ControlUrl, HomeOption, application
from headwater.features.backfills import BackfillRun, RunKind
from headwater.features.spec import load_features

if TYPE_CHECKING:
    from headwater.application import Application

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
        typer.echo("next: headwater features backfill (computes them from the archive)")


WaitOpt = Annotated[
    bool, typer.Option(help="Wait until the feature consumer has taken the values over.")
]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds to wait for the take-over.")]


def _run(app_: Application, kind: RunKind, *, wait: bool, timeout: float) -> BackfillRun | None:
    """Compute and stage a run with a progress bar; wait for the consumer's take-over."""
    worker = app_.new_backfill()
    bar: list[Any] = []

    def progress(done: int, total: int) -> None:
        if not bar:
            bar.append(typer.progressbar(length=max(total, 1), label=kind).__enter__())
        bar[0].update(done - bar[0].pos)

    try:
        run = worker.run(kind=kind, progress=progress)
    finally:
        if bar:
            bar[0].__exit__(None, None, None)
    if run is None:
        return None
    typer.echo(
        f"staged {run.id}: {run.progress.get('users_done')} users, "
        f"{run.progress.get('events')} events, archive positions {run.positions}"
    )
    if not wait:
        return run
    typer.echo("waiting for the feature consumer to take the values over")
    deadline = time.monotonic() + timeout
    while any(r.id == run.id for r in app_.feature_backfills.runs(("staged",))):
        if time.monotonic() > deadline:
            typer.echo(f"not taken over after {timeout:g}s: is the feature consumer running?")
            raise typer.Exit(1)
        time.sleep(0.2)
    return run


def backfill(
    home: HomeOption = None,
    control: ControlUrl = None,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = 600.0,
) -> None:
    """Compute the backfilling features for every user from the archive (the stream's
    own pass), stage them, and wait for the feature consumer to take them over."""
    with application(home, control=control) as app_:
        run = _run(app_, "backfill", wait=wait, timeout=timeout)
    if run is None:
        typer.echo("nothing to backfill")
    elif wait:
        typer.echo(f"taken over: {', '.join(run.features)} ready")


def rebuild(
    home: HomeOption = None,
    control: ControlUrl = None,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = 600.0,
    keep_previous: Annotated[
        bool, typer.Option(help="Keep the replaced namespace's rows (cleared by default).")
    ] = False,
) -> None:
    """Recreate every user's features from the archive and the bus tail into a new
    namespace of the online store; the feature consumer switches readers and itself
    over to it at once when it has taken it over."""
    with application(home, control=control) as app_:
        run = _run(app_, "rebuild", wait=wait, timeout=timeout)
        if run is None or not wait:
            return
        versions = app_.feature_versions
        current = versions.current()
        previous = current.previous_namespace if current else ""
        typer.echo(f"switched: the rows are in {run.namespace}")
        if previous and not keep_previous:
            # Readers poll the namespace once a second: let them move before clearing.
            time.sleep(2.0)
            cleared = app_.online.clear(previous)
            versions.forget_previous()
            typer.echo(f"cleared {previous}: {cleared} rows")


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
    runs = doc["backfills"]
    assert isinstance(runs, list)
    for run in runs:
        progress = run["progress"]
        typer.echo(
            f"  {run['kind']} {run['id']}: {run['state']} "
            f"{progress.get('users_done', 0)}/{progress.get('users_total', '?')} users, "
            f"archive positions {run['positions']}, taken over on {sorted(run['handed_over'])}"
        )
    switches = doc["switches"]
    assert isinstance(switches, list)
    for switch in switches:
        held = ",".join(f"{p}@{o}" for p, o in switch["positions"].items())
        typer.echo(f"  switched: group {switch['group']} at {held} ({switch['switched_at']})")


def register(group: typer.Typer) -> None:
    """Add ``plan``, ``apply``, ``backfill``, ``rebuild`` and ``status`` to a ``features``
    group."""
    group.command()(plan)
    group.command()(apply)
    group.command()(backfill)
    group.command()(rebuild)
    group.command()(status)

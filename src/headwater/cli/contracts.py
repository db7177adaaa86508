"""``headwater contracts``: check and register event type definitions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import msgspec
import typer

from headwater.cli._common import ControlUrl, HomeOption, application
from headwater.contract.loader import default_definitions, load_definitions
from headwater.registry.contracts import ChangePlan

__all__ = ["app"]

app = typer.Typer(help="Check and register event type contracts.", no_args_is_help=True)

PathArg = Annotated[
    Path | None,
    typer.Argument(help="A definition file or a directory of them (default: the shipped set)."),
]
PartialOpt = Annotated[
    bool,
    typer.Option("--partial", help="Types missing from PATH are left alone, not removed."),
]


def _print_plan(plan: ChangePlan) -> None:
    for name in plan.added:
        typer.echo(f"  + {name} (new, v1)")
    for name, version in plan.changed:
        typer.echo(f"  ~ {name} (new version v{version})")
    for name in plan.unchanged:
        typer.echo(f"  = {name} (unchanged)")
    for v in plan.violations:
        typer.echo(f"  ! {v.describe()}")


@app.command()
def check(
    path: PathArg = None,
    home: HomeOption = None,
    control: ControlUrl = None,
    partial: PartialOpt = False,
) -> None:
    """Compare proposed definitions with the registered ones; exit 1 if any change is refused."""
    definitions = load_definitions(path) if path else default_definitions()
    with application(home, control=control) as app_:
        plan = app_.registry.plan(definitions, partial=partial)
    _print_plan(plan)
    if plan.violations:
        typer.echo(f"refused: {len(plan.violations)} incompatible change(s)")
        raise typer.Exit(1)
    typer.echo("compatible")


@app.command()
def apply(
    path: PathArg = None,
    home: HomeOption = None,
    control: ControlUrl = None,
    partial: PartialOpt = False,
) -> None:
    """Register proposed definitions (all or nothing)."""
    definitions = load_definitions(path) if path else default_definitions()
    with application(home, control=control) as app_:
        plan = app_.registry.apply(definitions, partial=partial)
    _print_plan(plan)
    typer.echo("registered")


@app.command("list")
def list_(
    home: HomeOption = None,
    control: ControlUrl = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List registered event types with their versions."""
    with application(home, control=control) as app_:
        history = app_.registry.history()
    if as_json:
        doc = {
            n: [
                {
                    "version": r.version,
                    "registered_at": r.registered_at,
                    "definition": msgspec.to_builtins(r.definition),
                }
                for r in v
            ]
            for n, v in history.items()
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    for name, versions in history.items():
        latest = versions[-1]
        d = latest.definition
        typer.echo(
            f"{name:<14} v{latest.version:<3} owner={d.owner:<9} "
            f"item={'yes' if d.has_item else 'no ':<3} budget={d.freshness_budget_s:g}s "
            f"surfaces={','.join(d.surfaces)} fields={len(d.payload)}"
        )

"""``headwater bus`` and ``headwater dlq``: lag per group, and dead letters to list and replay."""

from __future__ import annotations

import json
from typing import Annotated

import msgspec
import typer

from headwater.bus import Message
from headwater.bus.base import group_lag
from headwater.cli._common import ControlUrl, HomeOption, application

__all__ = ["bus_app", "dlq_app"]

bus_app = typer.Typer(help="Inspect the bus.", no_args_is_help=True)
dlq_app = typer.Typer(help="List and replay dead letters.", no_args_is_help=True)

BusUrl = Annotated[
    str | None,
    typer.Option(
        "--bus",
        envvar="HEADWATER_BUS_URL",
        help="Bus URL: sqlite:///path, kafka://host:port or nats://host:port.",
    ),
]
GroupOpt = Annotated[str | None, typer.Option("--group", help="Only this consumer group.")]


@bus_app.command()
def lag(
    group: Annotated[
        str | None, typer.Argument(help="A consumer group (default: every consumer's).")
    ] = None,
    home: HomeOption = None,
    bus: BusUrl = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Consumer groups' lag per partition, in events and seconds."""
    with application(home, bus=bus) as app_:
        groups = (group,) if group else app_.lag_groups
        by_group = {g: app_.bus.lag(g) for g in groups}
    if as_json:
        doc = by_group[group] if group else by_group
        typer.echo(json.dumps(msgspec.to_builtins(doc), indent=2))
        return
    for name, rows in by_group.items():
        typer.echo(f"group {name}")
        typer.echo(f"{'partition':>9} {'committed':>10} {'end':>10} {'lag':>8} {'lag_s':>8}")
        for p in rows:
            typer.echo(
                f"{p.partition:>9} {p.committed:>10} {p.end:>10} {p.lag_events:>8} "
                f"{p.lag_seconds:>8.2f}"
            )
        events, seconds = group_lag(rows)
        typer.echo(f"total lag: {events} events, oldest {seconds:.2f}s")


@dlq_app.command("list")
def list_(
    home: HomeOption = None,
    control: ControlUrl = None,
    group: GroupOpt = None,
    replayed: Annotated[bool, typer.Option("--replayed", help="Include replayed.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Dead letters with their error."""
    with application(home, control=control) as app_:
        letters = app_.dead_letters.list(group, include_replayed=replayed)
    if as_json:
        doc = [
            {
                "id": d.id,
                "group": d.group,
                "key": d.record.key,
                "kind": d.record.kind,
                "error": d.error,
                "attempts": d.attempts,
                "failed_at": d.failed_at,
                "replayed_at": d.replayed_at,
            }
            for d in letters
        ]
        typer.echo(json.dumps(doc, indent=2))
        return
    for d in letters:
        state = f" replayed {d.replayed_at}" if d.replayed_at else ""
        typer.echo(
            f"{d.id}  key={d.record.key} attempts={d.attempts} failed={d.failed_at}"
            f"{state}\n    {d.error}"
        )
    typer.echo(f"{len(letters)} dead letter(s)")


@dlq_app.command()
def replay(
    ids: Annotated[list[str] | None, typer.Argument(help="group:partition:offset")] = None,
    home: HomeOption = None,
    control: ControlUrl = None,
    bus: BusUrl = None,
    group: GroupOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Every open dead letter.")] = False,
) -> None:
    """Send dead letters back to the bus; consumers apply them again (idempotently)."""
    if not ids and not all_:
        raise typer.BadParameter("name dead letters by id, or pass --all")
    with application(home, control=control, bus=bus) as app_:
        store = app_.dead_letters
        letters = [d for d in store.list(group) if all_ or d.id in set(ids or [])]
        missing = set(ids or []) - {d.id for d in letters}
        if missing:
            typer.echo(f"not found (or already replayed): {', '.join(sorted(missing))}", err=True)
        for d in letters:
            app_.bus.publish([Message(d.record.key, d.record.value, d.record.kind)])
            store.mark_replayed(d)
            typer.echo(f"replayed {d.id}")
    if missing:
        raise typer.Exit(1)

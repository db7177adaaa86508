"""``headwater bus`` and ``headwater dlq``: lag per group, and dead letters to list and replay."""

from __future__ import annotations

import json
from typing import Annotated

import msgspec
import typer

from headwater.bus import Message, open_bus
from headwater.bus.dead_letters import DeadLetterStore
from headwater.cli._common import ControlUrl, HomeOption, settings
from headwater.control import open_control_database

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
    group: str,
    home: HomeOption = None,
    bus: BusUrl = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A consumer group's lag per partition, in events and seconds."""
    handle = open_bus(bus or settings(home).bus_url)
    try:
        rows = handle.lag(group)
    finally:
        handle.close()
    if as_json:
        typer.echo(json.dumps(msgspec.to_builtins(rows), indent=2))
        return
    typer.echo(f"{'partition':>9} {'committed':>10} {'end':>10} {'lag':>8} {'lag_s':>8}")
    for p in rows:
        typer.echo(
            f"{p.partition:>9} {p.committed:>10} {p.end:>10} {p.lag_events:>8} "
            f"{p.lag_seconds:>8.2f}"
        )
    typer.echo(
        f"total lag: {sum(p.lag_events for p in rows)} events, "
        f"oldest {max((p.lag_seconds for p in rows), default=0):.2f}s"
    )


def _store(home: str | None, control: str | None) -> DeadLetterStore:
    return DeadLetterStore(open_control_database(control or settings(home).control_url))


@dlq_app.command("list")
def list_(
    home: HomeOption = None,
    control: ControlUrl = None,
    group: GroupOpt = None,
    replayed: Annotated[bool, typer.Option("--replayed", help="Include replayed.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Dead letters with their error."""
    letters = _store(home, control).list(group, include_replayed=replayed)
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
    store = _store(home, control)
    letters = [d for d in store.list(group) if all_ or d.id in set(ids or [])]
    missing = set(ids or []) - {d.id for d in letters}
    if missing:
        typer.echo(f"not found (or already replayed): {', '.join(sorted(missing))}", err=True)
    handle = open_bus(bus or settings(home).bus_url)
    try:
        for d in letters:
            handle.publish([Message(d.record.key, d.record.value, d.record.kind)])
            store.mark_replayed(d)
            typer.echo(f"replayed {d.id}")
    finally:
        handle.close()
    if missing:
        raise typer.Exit(1)

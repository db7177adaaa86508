"""``headwater producers``: API keys for producer teams."""

from __future__ import annotations

import json
from typing import Annotated

import msgspec
import typer

from headwater.cli._common import ControlUrl, HomeOption, application

__all__ = ["app"]

app = typer.Typer(help="Create, list and revoke producer API keys.", no_args_is_help=True)


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@app.command()
def create(
    team: str,
    home: HomeOption = None,
    control: ControlUrl = None,
    event_types: Annotated[str, typer.Option(help="Comma-separated, or * for all.")] = "*",
    surfaces: Annotated[str, typer.Option(help="Comma-separated, or * for all.")] = "*",
    rate: Annotated[float, typer.Option(help="Events per second.")] = 200_000.0,
    burst: Annotated[float | None, typer.Option(help="Bucket size (default: rate).")] = None,
    description: Annotated[str, typer.Option()] = "",
) -> None:
    """Create a key for TEAM; the key is printed once and never stored."""
    with application(home, control=control) as app_:
        secret, key = app_.keys.create(
            team,
            event_types=_split(event_types),
            surfaces=_split(surfaces),
            rate_limit_eps=rate,
            burst=burst,
            description=description,
        )
    typer.echo(
        f"key id:  {key.key_id}\nteam:    {key.team}\n"
        f"scope:   types={','.join(key.event_types)} surfaces={','.join(key.surfaces)}\n"
        f"limit:   {key.rate_limit_eps:g} events/s (burst {key.burst:g})\n"
        f"API key: {secret}\n(store it now: only its hash is kept)"
    )


@app.command("list")
def list_(
    home: HomeOption = None,
    control: ControlUrl = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Keys with their team, scope and limit."""
    with application(home, control=control) as app_:
        keys = app_.keys.list(include_revoked=revoked)
    if as_json:
        typer.echo(json.dumps(msgspec.to_builtins(keys), indent=2))
        return
    for k in keys:
        state = f" REVOKED {k.revoked_at}" if k.revoked_at else ""
        typer.echo(
            f"{k.key_id}  {k.team:<10} types={','.join(k.event_types)} "
            f"surfaces={','.join(k.surfaces)} rate={k.rate_limit_eps:g}/s{state}"
        )


@app.command()
def revoke(key_id: str, home: HomeOption = None, control: ControlUrl = None) -> None:
    """Revoke a key (gateways stop accepting it within 5 seconds)."""
    with application(home, control=control) as app_:
        key = app_.keys.revoke(key_id)
    typer.echo(f"revoked {key.key_id} of team {key.team} at {key.revoked_at}")

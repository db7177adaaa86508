"""``headwater keys`` (API keys with roles) and ``headwater producers`` (producer keys)."""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import msgspec
import typer

from headwater.access.keys import ALL, OWNED, ApiKey
from headwater.access.roles import Role
from headwater.cli._common import ControlUrl, HomeOption, application

__all__ = ["app", "keys_app", "show_new_key"]

keys_app = typer.Typer(
    help="Create, list and revoke API keys: each belongs to a team or a service and "
    "carries roles (producer, reader, privacy, contracts, operator, admin).",
    no_args_is_help=True,
)
app = typer.Typer(help="Producer keys: publish as a team.", no_args_is_help=True)

RoleOpt = Annotated[
    list[str],
    typer.Option("--role", help=f"A role to grant (repeat for several): {', '.join(Role)}."),
]
EventTypes = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated event types a producer key may publish (default: the types "
        "its team owns, now and later)."
    ),
]
AllTypes = Annotated[
    bool, typer.Option("--all-event-types", help="Every event type of every team (shown as *).")
]
Surfaces = Annotated[str, typer.Option(help="Comma-separated surfaces, or * for all.")]
Rate = Annotated[float, typer.Option(help="Events per second.")]
Burst = Annotated[float | None, typer.Option(help="Bucket size (default: rate).")]
Description = Annotated[str, typer.Option()]
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print the API key alone (for scripts).")
]


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _types(event_types: str | None, all_types: bool) -> tuple[str, ...]:
    if all_types and event_types:
        raise typer.BadParameter("give --event-types or --all-event-types, not both")
    if all_types:
        return (ALL,)
    if event_types and ALL in _split(event_types):
        raise typer.BadParameter("every event type needs --all-event-types")
    return _split(event_types) if event_types else (OWNED,)


def show_new_key(secret: str, key: ApiKey) -> None:
    """Print a new key once, with what it may do."""
    typer.echo(
        f"key id:  {key.key_id}\n{key.kind}:{' ' * (8 - len(key.kind))}{key.team}\n"
        f"roles:   {', '.join(key.roles)}\n"
        + (f"scope:   {key.describe_scope()}\n" if key.has(Role.PRODUCER) else "")
        + f"limit:   {key.rate_limit_eps:g} events/s (burst {key.burst:g})\n"
        f"API key: {secret}\n(store it now: only its hash is kept)"
    )


@keys_app.command("create")
def create_key(
    principal: Annotated[str, typer.Argument(help="The team or service the key belongs to.")],
    role: RoleOpt,
    home: HomeOption = None,
    control: ControlUrl = None,
    service: Annotated[
        bool, typer.Option("--service", help="The principal is a service, not a team.")
    ] = False,
    event_types: EventTypes = None,
    all_event_types: AllTypes = False,
    surfaces: Surfaces = ALL,
    rate: Rate = 200_000.0,
    burst: Burst = None,
    description: Description = "",
    quiet: Quiet = False,
) -> None:
    """Create a key for PRINCIPAL with the given roles; the key is printed once."""
    with application(home, control=control) as app_:
        secret, key = app_.keys.create(
            principal,
            roles=role,
            kind="service" if service else "team",
            event_types=_types(event_types, all_event_types),
            surfaces=_split(surfaces),
            rate_limit_eps=rate,
            burst=burst,
            description=description,
            created_by=f"cli:{getpass.getuser()}",
        )
    if quiet:
        typer.echo(secret)
    else:
        show_new_key(secret, key)


@app.command("create")
def create_producer(
    team: str,
    home: HomeOption = None,
    control: ControlUrl = None,
    event_types: EventTypes = None,
    all_event_types: AllTypes = False,
    surfaces: Surfaces = ALL,
    rate: Rate = 200_000.0,
    burst: Burst = None,
    description: Description = "",
    quiet: Quiet = False,
) -> None:
    """Create a producer key for TEAM (the types it owns by default); printed once."""
    create_key(
        team,
        [Role.PRODUCER.value],
        home=home,
        control=control,
        event_types=event_types,
        all_event_types=all_event_types,
        surfaces=surfaces,
        rate=rate,
        burst=burst,
        description=description,
        quiet=quiet,
    )


def _list(
    home: str | None, control: str | None, *, revoked: bool, as_json: bool, role: Role | None
) -> None:
    with application(home, control=control) as app_:
        keys = [
            k
            for k in app_.keys.list(include_revoked=revoked)
            if role is None or role.value in k.roles
        ]
    if as_json:
        typer.echo(json.dumps(msgspec.to_builtins(keys), indent=2))
        return
    for k in keys:
        state = f" REVOKED {k.revoked_at}" if k.revoked_at else ""
        scope = f" types={','.join(k.event_types)} surfaces={','.join(k.surfaces)}"
        typer.echo(
            f"{k.key_id}  {k.kind}:{k.team:<12} roles={','.join(k.roles)}"
            f"{scope if k.has(Role.PRODUCER) else ''} rate={k.rate_limit_eps:g}/s{state}"
        )


Revoked = Annotated[bool, typer.Option("--revoked", help="Include revoked.")]
AsJson = Annotated[bool, typer.Option("--json")]


@keys_app.command("list")
def list_keys(
    home: HomeOption = None,
    control: ControlUrl = None,
    revoked: Revoked = False,
    as_json: AsJson = False,
) -> None:
    """Keys with their principal, roles, scope and limit (never a secret)."""
    _list(home, control, revoked=revoked, as_json=as_json, role=None)


@app.command("list")
def list_producers(
    home: HomeOption = None,
    control: ControlUrl = None,
    revoked: Revoked = False,
    as_json: AsJson = False,
) -> None:
    """Producer keys with their team, scope (``*``: every type) and limit."""
    _list(home, control, revoked=revoked, as_json=as_json, role=Role.PRODUCER)


@keys_app.command("revoke")
def revoke_key(key_id: str, home: HomeOption = None, control: ControlUrl = None) -> None:
    """Revoke a key: every gateway refuses it within a second."""
    with application(home, control=control) as app_:
        key = app_.keys.revoke(key_id)
    typer.echo(f"revoked {key.key_id} of {key.kind} {key.team} at {key.revoked_at}")


app.command("revoke")(revoke_key)

"""API keys: who a caller is (a team or a service), what it may do, stored hashed.

A key looks like ``hwk_<key id>_<secret>``. Only its SHA-256 is stored; the key itself
is shown once, when created. Each key belongs to one principal (a team, or a service
such as the recommendation service) and carries roles (``access.roles``). A
``producer`` key publishes as its team, within its scope: the event types its team
owns (``@owned``, the default), a list, or every type (``*``, only when asked for),
and surfaces.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterable

import msgspec

from headwater._time import now_text
from headwater.access.roles import Role, parse_roles
from headwater.control.base import ControlDatabase
from headwater.errors import AuthenticationError, ConfigurationError

__all__ = ["ALL", "OWNED", "ApiKey", "ApiKeys"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hw_producer_keys (
        key_id TEXT PRIMARY KEY,
        team TEXT NOT NULL,
        key_hash TEXT NOT NULL,
        event_types TEXT NOT NULL,
        surfaces TEXT NOT NULL,
        rate_limit_eps DOUBLE PRECISION NOT NULL,
        burst DOUBLE PRECISION NOT NULL,
        description TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    )""",
)
#: Added after the first release: keys made before are producer keys of a team.
COLUMNS = {
    "roles": "TEXT NOT NULL DEFAULT '[\"producer\"]'",
    "kind": "TEXT NOT NULL DEFAULT 'team'",
    "created_by": "TEXT NOT NULL DEFAULT ''",
}

_PREFIX = "hwk"
#: Scope values: every event type or surface, and the event types the key's team owns.
ALL = "*"
OWNED = "@owned"
KINDS = ("team", "service")


class ApiKey(msgspec.Struct, frozen=True):
    """A credential's identity, roles and scope (never the secret)."""

    key_id: str
    team: str  # the principal: a team, or a service when kind == "service"
    event_types: tuple[str, ...]  # ("@owned",), ("*",) or names
    surfaces: tuple[str, ...]  # ("*",) allows every surface
    rate_limit_eps: float
    burst: float
    description: str
    created_at: str
    revoked_at: str | None = None
    roles: tuple[str, ...] = (Role.PRODUCER.value,)
    kind: str = "team"
    created_by: str = ""

    def has(self, role: Role) -> bool:
        """True when the key carries ``role`` (``admin`` carries every role)."""
        return role.value in self.roles or Role.ADMIN.value in self.roles

    def allows_type(self, event_type: str, owner_of: Callable[[str], str | None]) -> bool:
        """True when the key may publish this event type (``owner_of`` names a type's
        owning team, None for an unknown type)."""
        if ALL in self.event_types or event_type in self.event_types:
            return True
        return OWNED in self.event_types and owner_of(event_type) == self.team

    def allows_surface(self, surface: str) -> bool:
        """True when the key may publish from this surface."""
        return ALL in self.surfaces or surface in self.surfaces

    def describe_scope(self) -> str:
        """The scope in words, for errors and listings."""
        types = ", ".join(
            f"the types {self.team} owns" if t == OWNED else ("every type" if t == ALL else t)
            for t in self.event_types
        )
        surfaces = "every surface" if ALL in self.surfaces else ", ".join(self.surfaces)
        return f"{types} from {surfaces}"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_COLUMNS = (
    "key_id, team, key_hash, event_types, surfaces, rate_limit_eps, burst, description, "
    "created_at, revoked_at, roles, kind, created_by"
)


def _row(row: tuple[object, ...]) -> ApiKey:
    (key_id, team, _hash, types, surfaces, rate, burst, desc, created, revoked, roles, kind, by) = (
        row
    )
    return ApiKey(
        key_id=str(key_id),
        team=str(team),
        event_types=tuple(json.loads(str(types))),
        surfaces=tuple(json.loads(str(surfaces))),
        rate_limit_eps=float(str(rate)),
        burst=float(str(burst)),
        description=str(desc),
        created_at=str(created),
        revoked_at=None if revoked is None else str(revoked),
        roles=tuple(json.loads(str(roles))),
        kind=str(kind),
        created_by=str(by),
    )


def _name(value: str, what: str) -> str:
    if not value or len(value) > 64 or not value.replace("-", "").replace("_", "").isalnum():
        raise ConfigurationError(f"{what} {value!r}: 1 to 64 letters, digits, - and _")
    return value


class ApiKeys:
    """Create, list, revoke and check API keys."""

    def __init__(self, db: ControlDatabase) -> None:
        self._db = db
        db.ensure_schema(SCHEMA)
        db.ensure_columns("hw_producer_keys", COLUMNS)

    def create(
        self,
        team: str,
        *,
        roles: Iterable[Role | str] = (Role.PRODUCER,),
        kind: str = "team",
        event_types: tuple[str, ...] = (OWNED,),
        surfaces: tuple[str, ...] = (ALL,),
        rate_limit_eps: float = 200_000.0,
        burst: float | None = None,
        description: str = "",
        created_by: str = "",
    ) -> tuple[str, ApiKey]:
        """A new key for the principal ``team``: the secret (shown once) and its record."""
        _name(team, "team" if kind == "team" else "service")
        if kind not in KINDS:
            raise ConfigurationError(f"kind {kind!r}: one of {', '.join(KINDS)}")
        granted = parse_roles(roles)
        if not event_types or not surfaces:
            raise ConfigurationError("a key needs at least one event type and one surface")
        if rate_limit_eps <= 0:
            raise ConfigurationError("the rate limit must be positive")
        key_id = secrets.token_hex(4)
        secret = f"{_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(
            key_id=key_id,
            team=team,
            event_types=tuple(event_types),
            surfaces=tuple(surfaces),
            rate_limit_eps=rate_limit_eps,
            burst=burst if burst is not None else rate_limit_eps,
            description=description,
            created_at=now_text(),
            roles=tuple(r.value for r in granted),
            kind=kind,
            created_by=created_by,
        )
        self._db.execute(
            f"INSERT INTO hw_producer_keys ({_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)",
            (
                key_id,
                team,
                _digest(secret),
                json.dumps(list(record.event_types)),
                json.dumps(list(record.surfaces)),
                record.rate_limit_eps,
                record.burst,
                description,
                record.created_at,
                json.dumps(list(record.roles)),
                kind,
                created_by,
            ),
        )
        return secret, record

    def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        """Every key (secrets are never stored, so never listed)."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM hw_producer_keys ORDER BY team, created_at"
        )
        keys = [_row(r) for r in rows]
        return keys if include_revoked else [k for k in keys if k.revoked_at is None]

    def get(self, key_id: str) -> ApiKey:
        """One key by id."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM hw_producer_keys WHERE key_id = ?", (key_id,)
        )
        if not rows:
            raise ConfigurationError(f"no API key {key_id!r}")
        return _row(rows[0])

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key; every request with it fails from then on (each gateway checks
        again at least once a second)."""
        now = now_text()
        with self._db.transaction() as tx:
            tx.execute(
                "UPDATE hw_producer_keys SET revoked_at = ? "
                "WHERE key_id = ? AND revoked_at IS NULL",
                (now, key_id),
            )
            rows = tx.execute(
                f"SELECT {_COLUMNS} FROM hw_producer_keys WHERE key_id = ?", (key_id,)
            )
        if not rows:
            raise ConfigurationError(f"no API key {key_id!r}")
        return _row(rows[0])

    def any_admin(self) -> bool:
        """True when some key that is not revoked carries ``admin``."""
        return any(k.has(Role.ADMIN) for k in self.list())

    def authenticate(self, secret: str | None) -> ApiKey:
        """The key a secret belongs to; AuthenticationError when missing, unknown or revoked.

        The error never repeats the secret.
        """
        if not secret:
            raise AuthenticationError("missing API key (send it as 'Authorization: Bearer <key>')")
        parts = secret.split("_", 2)
        if len(parts) != 3 or parts[0] != _PREFIX:
            raise AuthenticationError("malformed API key")
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM hw_producer_keys WHERE key_id = ?", (parts[1][:16],)
        )
        # Compare digests in constant time so timing reveals nothing about stored keys.
        if not rows or not hmac.compare_digest(str(rows[0][2]), _digest(secret)):
            raise AuthenticationError("unknown API key")
        key = _row(rows[0])
        if key.revoked_at is not None:
            raise AuthenticationError(f"API key {key.key_id} was revoked at {key.revoked_at}")
        return key

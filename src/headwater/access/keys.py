"""Producer API keys, stored hashed in the control plane.

A key looks like ``hwk_<key id>_<secret>``. Only its SHA-256 is stored; the key itself
is shown once, when created. Each key belongs to one producer team, which becomes the
``producer`` of every signal published with it, and is scoped to event types and
surfaces (``*`` for all) with its own rate limit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets

import msgspec

from headwater._time import now_text
from headwater.control.base import ControlDatabase
from headwater.errors import AuthenticationError, ConfigurationError

__all__ = ["ProducerKey", "ProducerKeys"]

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

_PREFIX = "hwk"


class ProducerKey(msgspec.Struct, frozen=True):
    """A producer credential's identity and scope (never the secret)."""

    key_id: str
    team: str
    event_types: tuple[str, ...]  # ("*",) allows every type
    surfaces: tuple[str, ...]  # ("*",) allows every surface
    rate_limit_eps: float
    burst: float
    description: str
    created_at: str
    revoked_at: str | None = None

    def allows_type(self, event_type: str) -> bool:
        """True when the key may publish this event type."""
        return "*" in self.event_types or event_type in self.event_types

    def allows_surface(self, surface: str) -> bool:
        """True when the key may publish from this surface."""
        return "*" in self.surfaces or surface in self.surfaces


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _row(row: tuple[object, ...]) -> ProducerKey:
    key_id, team, _hash, types, surfaces, rate, burst, desc, created, revoked = row
    return ProducerKey(
        key_id=str(key_id),
        team=str(team),
        event_types=tuple(json.loads(str(types))),
        surfaces=tuple(json.loads(str(surfaces))),
        rate_limit_eps=float(str(rate)),
        burst=float(str(burst)),
        description=str(desc),
        created_at=str(created),
        revoked_at=None if revoked is None else str(revoked),
    )


_COLUMNS = (
    "key_id, team, key_hash, event_types, surfaces, rate_limit_eps, burst, description, "
    "created_at, revoked_at"
)


class ProducerKeys:
    """Create, list, revoke and check producer keys."""

    def __init__(self, db: ControlDatabase) -> None:
        self._db = db
        db.ensure_schema(SCHEMA)

    def create(
        self,
        team: str,
        *,
        event_types: tuple[str, ...] = ("*",),
        surfaces: tuple[str, ...] = ("*",),
        rate_limit_eps: float = 200_000.0,
        burst: float | None = None,
        description: str = "",
    ) -> tuple[str, ProducerKey]:
        """A new key for ``team``: the secret (shown once) and its stored record."""
        if not team or not team.replace("-", "").replace("_", "").isalnum():
            raise ConfigurationError(f"team {team!r}: use letters, digits, - and _")
        if not event_types or not surfaces:
            raise ConfigurationError("a key needs at least one event type and one surface")
        if rate_limit_eps <= 0:
            raise ConfigurationError("the rate limit must be positive")
        key_id = secrets.token_hex(4)
        secret = f"{_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        record = ProducerKey(
            key_id=key_id,
            team=team,
            event_types=tuple(event_types),
            surfaces=tuple(surfaces),
            rate_limit_eps=rate_limit_eps,
            burst=burst if burst is not None else rate_limit_eps,
            description=description,
            created_at=now_text(),
        )
        self._db.execute(
            f"INSERT INTO hw_producer_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
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
            ),
        )
        return secret, record

    def list(self, *, include_revoked: bool = False) -> list[ProducerKey]:
        """Every key (secrets are never stored, so never listed)."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM hw_producer_keys ORDER BY team, created_at"
        )
        keys = [_row(r) for r in rows]
        return keys if include_revoked else [k for k in keys if k.revoked_at is None]

    def revoke(self, key_id: str) -> ProducerKey:
        """Revoke a key; publishes with it fail from then on."""
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
            raise ConfigurationError(f"no producer key {key_id!r}")
        return _row(rows[0])

    def authenticate(self, secret: str | None) -> ProducerKey:
        """The key a secret belongs to; AuthenticationError when missing, unknown or revoked."""
        if not secret:
            raise AuthenticationError("missing API key (send it as 'Authorization: Bearer <key>')")
        parts = secret.split("_", 2)
        if len(parts) != 3 or parts[0] != _PREFIX:
            raise AuthenticationError("malformed API key")
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM hw_producer_keys WHERE key_id = ?", (parts[1],)
        )
        # Compare digests in constant time so timing reveals nothing about stored keys.
        if not rows or not hmac.compare_digest(str(rows[0][2]), _digest(secret)):
            raise AuthenticationError("unknown API key")
        key = _row(rows[0])
        if key.revoked_at is not None:
            raise AuthenticationError(f"API key {key.key_id} was revoked at {key.revoked_at}")
        return key

"""Dashboard sessions: an operator logs in with a key once, the browser keeps a cookie.

The cookie carries a random token; the control plane keeps only its SHA-256, the key
it stands for and when it expires, so every gateway behind a load balancer accepts it
and a revoked key ends its sessions too.

A session is not the key: it acts with the roles the dashboard needs and no other
(``SESSION_ROLES``, those of them the key holds), so a cookie taken from a browser
where an administrator logged in cannot create keys or erase users. The gateway also
accepts it on reads only (``gateway.security``).
"""

from __future__ import annotations

import hashlib
import secrets
import time

import msgspec

from headwater._time import format_ms
from headwater.access.keys import ApiKey, ApiKeys
from headwater.access.roles import Role
from headwater.control.base import ControlDatabase
from headwater.errors import AuthenticationError, ConfigurationError

__all__ = ["SESSION_ROLES", "SESSION_TTL_S", "Sessions", "session_view"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hw_sessions (
        token_hash TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_ms BIGINT NOT NULL
    )""",
)
#: How long a dashboard session lasts without logging in again.
SESSION_TTL_S = 8 * 3600.0
#: The roles a session may act with: the dashboard's data (operator) and its user
#: lookup (reader), each only when the key holds it.
SESSION_ROLES = (Role.READER, Role.OPERATOR)


def session_view(key: ApiKey) -> ApiKey:
    """The key as a session acts with it: the ``SESSION_ROLES`` it holds, nothing more
    (an admin key's session is an operator and a reader, not an admin)."""
    roles = tuple(r.value for r in SESSION_ROLES if key.has(r))
    return msgspec.structs.replace(key, roles=roles, event_types=(), surfaces=())


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Create, check and end dashboard sessions."""

    def __init__(self, db: ControlDatabase, keys: ApiKeys, *, ttl_s: float = SESSION_TTL_S) -> None:
        self._db = db
        self._keys = keys
        self.ttl_s = ttl_s
        db.ensure_schema(SCHEMA)

    def create(self, key: ApiKey) -> str:
        """A new session for ``key``: its token (the cookie's value)."""
        token = secrets.token_urlsafe(32)
        now = int(time.time() * 1000)
        self._db.execute(
            "INSERT INTO hw_sessions (token_hash, key_id, created_at, expires_ms) "
            "VALUES (?, ?, ?, ?)",
            (_digest(token), key.key_id, format_ms(now), now + int(self.ttl_s * 1000)),
        )
        # Expired sessions go whenever a new one starts: the table stays small.
        self._db.execute("DELETE FROM hw_sessions WHERE expires_ms < ?", (now,))
        return token

    def authenticate(self, token: str) -> ApiKey:
        """The key a session stands for, narrowed to the session's roles
        (``session_view``); AuthenticationError when unknown, expired or when the key
        was revoked."""
        rows = self._db.execute(
            "SELECT key_id, expires_ms FROM hw_sessions WHERE token_hash = ?", (_digest(token),)
        )
        if not rows or int(rows[0][1]) < time.time() * 1000:
            raise AuthenticationError("no such session, or it expired: log in again")
        try:
            key = self._keys.get(str(rows[0][0]))
        except ConfigurationError:
            raise AuthenticationError("the session's key no longer exists") from None
        if key.revoked_at is not None:
            raise AuthenticationError(f"API key {key.key_id} was revoked at {key.revoked_at}")
        return session_view(key)

    def end(self, token: str) -> None:
        """Log out: the session's token stops working."""
        self._db.execute("DELETE FROM hw_sessions WHERE token_hash = ?", (_digest(token),))

"""The keyed hash that names an erased user in the audit and in tombstones.

The audit must not keep the raw user id once the user is erased, yet must let the
platform recognise the user's late events. A keyed hash (HMAC-SHA-256) does both:
without the key, nobody can test candidate ids against the stored hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from headwater.errors import ConfigurationError

__all__ = ["SubjectHasher", "load_erasure_key"]


def load_erasure_key(home: Path) -> bytes:
    """The key from ``HEADWATER_ERASURE_KEY`` (hex), else ``<home>/erasure.key`` (created once).

    Several processes sharing one control plane must share the key: set the variable.
    """
    env = os.environ.get("HEADWATER_ERASURE_KEY", "").strip()
    if env:
        try:
            key = bytes.fromhex(env)
        except ValueError:
            raise ConfigurationError("HEADWATER_ERASURE_KEY must be hex") from None
        if len(key) < 16:
            raise ConfigurationError("HEADWATER_ERASURE_KEY must be at least 16 bytes")
        return key
    path = home / "erasure.key"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


class SubjectHasher:
    """HMAC of user ids, with a small cache for hot users on the consumer path."""

    def __init__(self, key: bytes, *, cache_size: int = 200_000) -> None:
        self._key = key
        self._cache: dict[str, str] = {}
        self._cache_size = cache_size

    def __call__(self, user_id: str) -> str:
        """The subject hash of a user id (hex)."""
        found = self._cache.get(user_id)
        if found is None:
            found = hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[user_id] = found
        return found

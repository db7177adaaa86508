"""The keyed hash that names an erased user in the audit and in tombstones.

The audit must not keep the raw user id once the user is erased, yet must let the
platform recognise the user's late events. A keyed hash (HMAC-SHA-256) does both:
without the key, nobody can test candidate ids against the stored hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any

from headwater._extras import needs_extra
from headwater.errors import ConfigurationError, ErasureError

__all__ = ["SubjectHasher", "SubjectSealer", "load_erasure_key"]

_BLOCK = 64  # SHA-256's block size: HMAC pads (or first hashes) the key to it


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
        # HMAC-SHA-256 (RFC 2104) with the key's two padded blocks hashed once: each id
        # then costs two copies and two updates, 0.66 us against 1.6 us for hmac.new.
        block = hashlib.sha256(key).digest() if len(key) > _BLOCK else key
        block = block.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def __call__(self, user_id: str) -> str:
        """The subject hash of a user id (hex): ``hmac.new(key, id, sha256).hexdigest()``."""
        found = self._cache.get(user_id)
        if found is None:
            inner = self._inner.copy()
            inner.update(user_id.encode())
            outer = self._outer.copy()
            outer.update(inner.digest())
            found = outer.hexdigest()
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[user_id] = found
        return found


_SEALED = "sealed:v1:"


class SubjectSealer:
    """The raw user id of an open request, encrypted for the control plane (AES-GCM).

    The ledger needs the raw id until the request completes (retries and the verification
    search for it), but the control plane's database keeps old row versions (PostgreSQL's
    dead tuples, its WAL, backups) beyond any ``UPDATE``: what it stores is therefore this
    ciphertext, bound to its request id, never the id in clear. The key is derived from
    the erasure key; the ciphertext is wiped when the request completes.
    """

    def __init__(self, key: bytes) -> None:
        self._key = hmac.new(key, b"headwater: sealed subject ids v1", hashlib.sha256).digest()
        self._cipher: Any = None

    @property
    def _aead(self) -> Any:
        # Loaded on first use: a process that never opens a request (a consumer of a
        # base install) does not need the package.
        if self._cipher is None:
            with needs_extra():
                from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            self._cipher = AESGCM(self._key)
        return self._cipher

    def seal(self, value: str, request_id: str) -> str:
        """The text the ledger stores for ``value`` (the raw user id, or the user's event
        ids) of ``request_id``."""
        nonce = os.urandom(12)
        box = self._aead.encrypt(nonce, value.encode(), request_id.encode())
        return _SEALED + base64.urlsafe_b64encode(nonce + box).decode()

    def open(self, stored: str, request_id: str) -> str:
        """The raw user id back from :meth:`seal`'s text.

        A value stored before sealing existed (clear text) is returned as it is.
        """
        if not stored.startswith(_SEALED):
            return stored
        from cryptography.exceptions import InvalidTag

        raw = base64.urlsafe_b64decode(stored[len(_SEALED) :])
        try:
            plain: bytes = self._aead.decrypt(raw[:12], raw[12:], request_id.encode())
        except InvalidTag:
            raise ErasureError(
                f"request {request_id}: its subject id cannot be opened with this erasure "
                "key (every process must share HEADWATER_ERASURE_KEY)"
            ) from None
        return plain.decode()

"""Backend URLs (``sqlite:///path``, ``redis://host:port/db``, ``kafka://host:port`` ...),
and the address the API listens on."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from headwater.errors import ConfigurationError, HeadwaterError

__all__ = ["check_listenable", "redacted", "scheme_of", "sqlite_path"]


def scheme_of(url: str) -> str:
    """The lower-cased scheme of a backend URL, e.g. ``sqlite`` or ``postgresql``."""
    scheme = urlsplit(url).scheme.lower()
    if not scheme:
        raise ConfigurationError(f"{url!r} is not a backend URL (expected scheme://...)")
    return scheme.split("+", 1)[0]


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL.

    ``sqlite:///:memory:`` gives an in-memory database (one connection only).
    """
    if scheme_of(url) != "sqlite":
        raise ConfigurationError(f"{url!r} is not a sqlite:/// URL")
    rest = url.split("://", 1)[1]
    if not rest.startswith("/"):
        raise ConfigurationError(f"{url!r}: use sqlite:///relative/path or sqlite:////abs/path")
    path = rest[1:].split("?", 1)[0]
    if not path:
        raise ConfigurationError(f"{url!r} names no file")
    if path != ":memory:":
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return path


def redacted(url: str) -> str:
    """``url`` with any credentials replaced by ``***``, for error messages and logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=f"***@{parts.netloc.rsplit('@', 1)[1]}"))


def check_listenable(host: str, port: int) -> None:
    """``HeadwaterError`` when ``host:port`` cannot be listened on (a port already taken,
    say). ``up`` asks before it starts anything, so a taken port is a one-line error, not
    a start and a stop of every consumer. The server's own bind, a moment later, still
    decides."""
    try:
        probe = socket.create_server((host, port))
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise HeadwaterError(
            f"cannot listen on {host}:{port}: {reason} (choose another port with --port)"
        ) from None
    probe.close()

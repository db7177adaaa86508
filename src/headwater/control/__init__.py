"""Control plane: contracts, producer keys and the erasure ledger in SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

from headwater._url import scheme_of
from headwater.control.base import ControlDatabase, ControlTransaction
from headwater.errors import ConfigurationError

__all__ = [
    "SUPPORTED_CONTROL_PLANES",
    "ControlDatabase",
    "ControlTransaction",
    "open_control_database",
]


def _sqlite(url: str) -> ControlDatabase:
    from headwater.control.sqlite import SqliteControlDatabase

    return SqliteControlDatabase(url)


def _postgres(url: str) -> ControlDatabase:
    from headwater.control.postgres import PostgresControlDatabase

    return PostgresControlDatabase(url)


#: URL scheme -> backend factory.
SUPPORTED_CONTROL_PLANES: dict[str, Callable[[str], ControlDatabase]] = {
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
}


def open_control_database(url: str) -> ControlDatabase:
    """Open the control-plane database a URL names."""
    scheme = scheme_of(url)
    factory = SUPPORTED_CONTROL_PLANES.get(scheme)
    if factory is None:
        raise ConfigurationError(
            f"no control-plane backend for {scheme}://; supported: "
            f"{sorted(SUPPORTED_CONTROL_PLANES)}"
        )
    return factory(url)

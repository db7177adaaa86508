"""The roles a key can carry, and what each one is for.

producer   publish signals, within the key's scope (its team's event types by default)
reader     read features, batch reads and recommendations (the recommendation service)
privacy    create erasure requests, read and export their audits
contracts  register and evolve the event types its own team owns
operator   the dashboard, stats, lag, SLOs, metrics, readiness, dead letters
admin      everything, including keys and transferring an event type to another team
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from headwater.errors import ConfigurationError

__all__ = ["Role", "parse_roles"]


class Role(StrEnum):
    """A role of an API key."""

    PRODUCER = "producer"
    READER = "reader"
    PRIVACY = "privacy"
    CONTRACTS = "contracts"
    OPERATOR = "operator"
    ADMIN = "admin"


def parse_roles(values: Iterable[Role | str]) -> tuple[Role, ...]:
    """Roles from names, in declaration order, each once; a bad name is an error."""
    found: set[Role] = set()
    for value in values:
        try:
            found.add(Role(str(value).strip().lower()))
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise ConfigurationError(f"unknown role {value!r}; the roles are: {known}") from None
    if not found:
        raise ConfigurationError("a key needs at least one role")
    return tuple(r for r in Role if r in found)

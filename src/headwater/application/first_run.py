"""What ``up`` and ``up --processes`` do on a new control plane: register the shipped
teams' contracts and create the first admin key. ``Application``'s
``register_shipped_contracts`` and ``ensure_admin_key`` call these.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from headwater.access.roles import Role
from headwater.contract.loader import default_definitions

if TYPE_CHECKING:
    from headwater.application.root import Application

__all__ = ["ensure_admin_key", "register_shipped_contracts"]

log = logging.getLogger("headwater.application")


def register_shipped_contracts(app: Application) -> bool:
    """Register the shipped contracts when the registry has none; True if it did."""
    if app.registry.current():
        return False
    app.registry.apply(default_definitions())
    app.refresh_contracts()
    log.info("registered the shipped contracts on a new control plane")
    return True


def ensure_admin_key(app: Application) -> str | None:
    """A new admin key's secret when no key carries ``admin``; else None."""
    if app.keys.any_admin():
        return None
    secret, _ = app.keys.create(
        "admin",
        roles=(Role.ADMIN,),
        kind="service",
        description="created by headwater up on a new control plane",
        created_by="headwater up",
    )
    log.info("created the first admin key")
    return secret

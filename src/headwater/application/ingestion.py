"""The gateway's intake, built for ``Application``: the ingestor that validates,
de-duplicates and publishes producer batches (with the erased users' policy), and the
per-key rate limiter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from headwater.ingest.erased import ErasedUsers
from headwater.ingest.ingestor import Ingestor
from headwater.ratelimit import RateLimiter, open_rate_limiter

if TYPE_CHECKING:
    from headwater.application.root import Application

__all__ = ["ingestor", "rate_limiter"]


def ingestor(app: Application) -> Ingestor:
    """The ingestor over the shared registry, bus and idempotency window, closed with
    ``app``."""
    policy: Literal["accept", "reject"] = (
        "reject" if app.settings.erased_user_policy == "reject" else "accept"
    )
    built = Ingestor(
        app.registry,
        app.bus,
        app.dedupe,
        limits=app.limits,
        erased=ErasedUsers(app.tombstones, policy),
        record_version=app.settings.bus_record_version,
    )
    built.lease_s = app.settings.claim_lease_s
    app.own("ingestor", built.close)
    return built


def rate_limiter(app: Application) -> RateLimiter:
    """The rate limiter of the settings (``HEADWATER_RATELIMIT_URL``), closed with ``app``."""
    limiter = open_rate_limiter(app.settings.ratelimit_url)
    app.own("rate limiter", limiter.close)
    return limiter

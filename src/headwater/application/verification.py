"""The independent check of each store a deployment erases from (``erasure.verify``).

Each participant's store is read by a path of its own, not through the component that
applied the erasure: SQLite files byte by byte, Redis by a scan of every key and value,
the archive file by file, the dead letters by a fresh query of the control plane. The
bus is read through its own API (its SQLite log packs records per batch, and the open
request's erasure event names the user until completion); a bus that cannot count
(Kafka, until retention) says so instead of passing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from headwater._redis import RedisConnection
from headwater._url import scheme_of
from headwater.bus.base import KIND_SIGNAL, Record
from headwater.erasure.verify import (
    CheckResult,
    StoreCheck,
    Subject,
    Verifier,
    archive_scan,
    redis_scan,
    sqlite_byte_scan,
)

if TYPE_CHECKING:
    from headwater.application.root import Application

__all__ = ["build_verifier"]


def _store_check(app: Application, url: str) -> StoreCheck:
    scheme = scheme_of(url)
    if scheme == "sqlite":
        return sqlite_byte_scan(url)
    if scheme in ("redis", "rediss"):
        conn = RedisConnection(url, what="erasure verification")
        app.own("erasure verification (redis)", conn.close)
        return redis_scan(conn.client, conn.prefix, cluster=conn.cluster)
    raise ValueError(f"no independent check for a store at {scheme}://")


def _bus_check(app: Application) -> StoreCheck:
    bus = app.bus

    def check(users: Sequence[Subject]) -> CheckResult:
        signals: Callable[[Record], bool] = lambda r: r.kind == KIND_SIGNAL  # noqa: E731
        counted = bus.count_keys({u.user_id: signals for u in users})
        if counted is None:
            cap = bus.erasure_capability()
            detail = {"detail": cap.detail, "retention_seconds": cap.retention_seconds}
            return (
                "none: the log cannot be searched by key",
                {u.user_id: (None, detail) for u in users},
            )
        return (
            "count of the user's signal records in the log",
            {u.user_id: (counted.get(u.user_id, 0), {}) for u in users},
        )

    return check


def _dead_letter_check(app: Application) -> StoreCheck:
    app.dead_letters  # noqa: B018 - its table exists before the first query

    def check(users: Sequence[Subject]) -> CheckResult:
        ids = [u.user_id for u in users]
        found: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = app.control.execute(
                "SELECT record_key, COUNT(*) FROM hw_dead_letters "
                f"WHERE record_key IN ({', '.join('?' * len(chunk))}) GROUP BY record_key",
                tuple(chunk),
            )
            found.update({str(k): int(n) for k, n in rows})
        return (
            "count of dead letters keyed by the user",
            {u.user_id: (found.get(u.user_id, 0), {}) for u in users},
        )

    return check


def build_verifier(app: Application) -> Verifier:
    """The checks of every store this deployment's erasures must reach."""
    settings = app.settings
    online = _store_check(app, settings.online_url)
    from headwater.batch.derived import OUTPUTS_DIR  # the archive's extra (pyarrow)

    cfg = app.archive_settings
    root = cfg.url.rstrip("/")
    checks: dict[str, list[StoreCheck]] = {
        "online-features": [online],
        # The day aggregates beside the archive, and the rows written to the online store.
        "batch-derived": [online, archive_scan(f"{root}/{OUTPUTS_DIR}", cfg.storage_options)],
        "bus-log": [_bus_check(app)],
        "dead-letters": [_dead_letter_check(app)],
    }
    if scheme_of(settings.dedupe_url) in ("sqlite", "redis", "rediss"):
        checks["idempotency-window"] = [_store_check(app, settings.dedupe_url)]
    checks["archive"] = [archive_scan(f"{root}/signals", cfg.storage_options)]
    return Verifier(checks)

"""The independent check of each store a deployment erases from (``erasure.verify``).

Each participant's store is read by a path of its own, not through the component that
applied the erasure: SQLite files byte by byte, Redis by a key scan, the archive file by
file, the dead letters by a fresh query of the control plane. The bus is read through
its own API (its SQLite log packs records per batch, and the open request's erasure
event names the user until completion); a bus that cannot count (Kafka, until
retention) says so instead of passing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from headwater._redis import RedisConnection
from headwater._url import scheme_of
from headwater.bus.base import KIND_SIGNAL, Record
from headwater.erasure.verify import (
    StoreCheck,
    Verifier,
    archive_scan,
    redis_key_scan,
    sqlite_byte_scan,
)

if TYPE_CHECKING:
    from headwater.application.root import Application

__all__ = ["build_verifier"]


def _store_check(app: Application, url: str) -> StoreCheck:
    scheme = scheme_of(url)
    if scheme == "sqlite":
        return sqlite_byte_scan(url)
    if scheme == "redis":
        conn = RedisConnection(url, what="erasure verification")
        app.own("erasure verification (redis)", conn.close)
        return redis_key_scan(conn.client, conn.prefix)
    raise ValueError(f"no independent check for a store at {scheme}://")


def _bus_check(app: Application) -> StoreCheck:
    bus = app.bus

    def check(user_id: str, subject: str) -> tuple[str, int | None, dict[str, Any]]:
        del subject
        signals: Callable[[Record], bool] = lambda r: r.kind == KIND_SIGNAL  # noqa: E731
        counted = bus.count_keys({user_id: signals})
        if counted is None:
            cap = bus.erasure_capability()
            return (
                "none: the log cannot be searched by key",
                None,
                {"detail": cap.detail, "retention_seconds": cap.retention_seconds},
            )
        return ("count of the user's signal records in the log", counted[user_id], {})

    return check


def _dead_letter_check(app: Application) -> StoreCheck:
    def check(user_id: str, subject: str) -> tuple[str, int | None, dict[str, Any]]:
        del subject
        found = app.control.execute(
            "SELECT COUNT(*) FROM hw_dead_letters WHERE record_key = ?", (user_id,)
        )
        return ("count of dead letters keyed by the user", int(found[0][0]), {})

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
    if scheme_of(settings.dedupe_url) in ("sqlite", "redis"):
        checks["idempotency-window"] = [_store_check(app, settings.dedupe_url)]
    checks["archive"] = [archive_scan(f"{root}/signals", cfg.storage_options)]
    return Verifier(checks)

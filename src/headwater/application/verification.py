"""The independent check of each store a deployment erases from (``erasure.verify``).

Each participant's store is read by a path of its own, not through the component that
applied the erasure: SQLite files byte by byte, Redis by a scan of every key and value,
the archive file by file, every dead letter read back from the control plane. The
bus's partitions that hold the users are read back, every signal record that names a
user (as every signal does) searched for the user ids and event ids whatever its key
(the log's files are not searched byte by byte: the open request's own erasure event
names the user until completion); a bus that cannot read its log back (Kafka, until
retention) says so instead of passing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from headwater._idsearch import Needles
from headwater._redis import RedisConnection
from headwater._url import scheme_of
from headwater.bus.base import KIND_SIGNAL, Record
from headwater.erasure.checks import archive_scan, redis_scan, sqlite_byte_scan
from headwater.erasure.verify import CheckResult, StoreCheck, Subject, Verifier, owners, per_user

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
        keys = {u.user_id for u in users}
        named = Needles(keys)
        needles = Needles(owners(users))

        def names_a_user(r: Record) -> bool:
            # Every signal names its user (so, too, does a copy under another key).
            return r.kind == KIND_SIGNAL and (r.key in keys or named.any_in(r.value))

        parts = {bus.partition_of(u.user_id) for u in users}
        # Stored batches without a user's id are skipped whole, before decoding (by
        # SQLite itself for a few users).
        found = bus.search_partitions(parts, named.any_in, names_a_user, ids=keys)
        if found is None:
            cap = bus.erasure_capability()
            detail = {"detail": cap.detail, "retention_seconds": cap.retention_seconds}
            return (
                "none: the log cannot be read back",
                {u.user_id: (None, detail) for u in users},
            )
        hits: dict[str, dict[str, int]] = {}
        for r in found:
            place = hits.setdefault(f"partition {r.partition}", {})
            for value, n in needles.count(r.value).items():
                place[value] = place.get(value, 0) + n
            if r.key in keys:
                place[r.key] = place.get(r.key, 0) + 1
        method = (
            "every signal record of the users' partitions read back from the log, its key "
            "and value searched for the user ids and event ids"
        )
        return method, per_user(users, hits)

    return check


def _dead_letter_check(app: Application) -> StoreCheck:
    letters = app.dead_letters

    def check(users: Sequence[Subject]) -> CheckResult:
        # Every letter read back, not a query by key: a letter under another key whose
        # record names the user (or one of the user's events) is residue too.
        found = letters.search(Needles(owners(users)))
        hits = {f"dead letter {letter_id}": counts for letter_id, counts in found.items()}
        method = (
            "every dead letter read back from the control plane, its key and decoded "
            "record searched for the user ids and event ids"
        )
        return method, per_user(users, hits)

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

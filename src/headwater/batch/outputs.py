"""From day aggregates to the online store: user rows and item tables, window by window.

Namespaces: ``user_batch`` (one JSON row per user active in the lookback window, each
with its own ``as_of``: the declared affinities and the fixed aggregates) and one per
declared item feature, named after it: by default ``item_covis`` (top co-visited items
per item) and ``item_pop`` (top items per ``surface:day``, ``surface:7d`` and
``*:7d``). Rows are written in chunks (the streaming consumer shares the store and must
not wait long), then rows that the new outputs no longer have are deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from headwater.batch.derived import DerivedStore
from headwater.batch.kinds import (
    covis_from_pair_table,
    item_covis_sql,
    item_pop_sql,
    user_batch_sql,
)
from headwater.batch.namespaces import ITEM_COVIS, ITEM_POP, USER_BATCH
from headwater.batch.settings import BatchSettings
from headwater.batch.sql import as_of_text
from headwater.online.base import OnlineStore

__all__ = [
    "ITEM_COVIS",
    "ITEM_POP",
    "USER_BATCH",
    "item_namespaces",
    "refresh_outputs",
    "window_start",
]

_CHUNK = 20_000


def window_start(end_day: str, days: int) -> str:
    """The first day of a window of ``days`` days that ends with ``end_day``."""
    return (date.fromisoformat(end_day) - timedelta(days=days - 1)).isoformat()


def _write(con: Any, sql: str, store: OnlineStore, namespace: str) -> tuple[int, int]:
    written: set[str] = set()
    reader = con.sql(sql).to_arrow_reader(_CHUNK)
    for batch in reader:
        keys = batch.column(0).to_pylist()
        docs = batch.column(1).to_pylist()
        store.put(namespace, {k: d.encode() for k, d in zip(keys, docs, strict=True)})
        written.update(keys)
    # Rows whose key has left the window (or whose user was erased) go.
    gone = [k for k in store.keys(namespace) if k not in written]
    for start in range(0, len(gone), _CHUNK):
        store.delete(namespace, gone[start : start + _CHUNK])
    return len(written), len(gone)


def refresh_outputs(
    con: Any,
    derived: DerivedStore,
    store: OnlineStore,
    cfg: BatchSettings,
    *,
    as_of_day: str,
    users: bool = True,
    items: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Recompute the outputs of the window ending ``as_of_day``; rows written and deleted."""
    as_of = as_of_text(as_of_day)
    long_start = window_start(as_of_day, cfg.lookback_days)
    out: dict[str, Any] = {}
    jobs: list[tuple[str, str]] = []
    if users:
        uid = derived.relation(con, "user_item_day", start=long_start, end=as_of_day)
        jobs.append(
            (
                USER_BATCH,
                user_batch_sql(
                    uid,
                    as_of_day=as_of_day,
                    as_of=as_of,
                    cfg=cfg,
                    short_start=window_start(as_of_day, cfg.affinity_short_days),
                ),
            )
        )
    if items:
        for f in cfg.features():
            first = window_start(as_of_day, f.window_days)
            if f.kind == "co_visitation":
                pair_table = covis_from_pair_table(f, cfg)
                source = derived.relation(
                    con,
                    "item_pair_day" if pair_table else "user_item_day",
                    start=first,
                    end=as_of_day,
                )
                sql = item_covis_sql(source, f, as_of=as_of, from_user_items=not pair_table)
                jobs.append((f.name, sql))
            elif f.kind == "popularity":
                # Daily lists cover every day kept; the rolling lists, the feature's window.
                start = long_start if f.daily else first
                pop = derived.relation(con, "item_pop_day", start=start, end=as_of_day)
                jobs.append((f.name, item_pop_sql(pop, f, as_of=as_of, as_of_day=as_of_day)))
    for namespace, sql in jobs:
        written, deleted = _write(con, sql, store, namespace)
        out[namespace] = {"written": written, "deleted": deleted}
        if progress is not None:
            progress(f"  {namespace}: {written:,} row(s) written, {deleted:,} removed")
    out["as_of"] = as_of
    return out


def item_namespaces(cfg: BatchSettings) -> list[str]:
    """The online-store namespaces of the item features ``cfg`` computes."""
    return [f.name for f in cfg.features() if f.kind != "affinity"]

"""The batch's SQL (DuckDB): day aggregates from archive rows, outputs from day aggregates.

Two stages. Per day partition (the incremental unit): ``user_item_day`` (one row per
user, item and day), ``item_pair_day`` (items the same user viewed, clicked or bought
the same day) and ``item_pop_day`` (per surface), with a count per event type so any
declared weighting can be computed from them. The outputs over the day aggregates of
a window are generated from the declared batch features (``batch/kinds.py``). Every
ordering has a tie-breaker so a recompute from the same archive gives the same bytes.

Only dates and integers are put into the text, after validation; values from data
go through parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from headwater.batch.declared import COVIS_TYPES, EVENT_WEIGHTS, TYPE_COLUMNS
from headwater.batch.settings import BatchSettings

__all__ = [
    "DAY_TABLES",
    "EMPTY",
    "as_of_text",
    "day_text",
    "events_sql",
    "item_pair_day_sql",
    "item_pop_day_sql",
    "pairs_sql",
    "stamp_text",
    "user_item_day_sql",
]

#: The derived day tables, in the order a chunk computes them.
DAY_TABLES = ("user_item_day", "item_pair_day", "item_pop_day")

#: Typed empty relations for day tables that have no file yet.
EMPTY = {
    "user_item_day": (
        "SELECT NULL::VARCHAR AS date, NULL::VARCHAR AS user_id, NULL::VARCHAR AS item_id, "
        "NULL::VARCHAR AS category, NULL::VARCHAR AS brand, NULL::INTEGER AS views, "
        "NULL::INTEGER AS clicks, NULL::INTEGER AS purchases, NULL::DOUBLE AS spend, "
        "NULL::DOUBLE AS weight, NULL::TIMESTAMPTZ AS last_at, NULL::INTEGER AS saves, "
        "NULL::INTEGER AS add_to_carts WHERE false"
    ),
    "item_pair_day": (
        "SELECT NULL::VARCHAR AS date, NULL::VARCHAR AS item_a, NULL::VARCHAR AS item_b, "
        "NULL::INTEGER AS users WHERE false"
    ),
    "item_pop_day": (
        "SELECT NULL::VARCHAR AS date, NULL::VARCHAR AS surface, NULL::VARCHAR AS item_id, "
        "NULL::VARCHAR AS category, NULL::VARCHAR AS brand, NULL::INTEGER AS events, "
        "NULL::INTEGER AS users, NULL::DOUBLE AS score, NULL::INTEGER AS views, "
        "NULL::INTEGER AS clicks, NULL::INTEGER AS saves, NULL::INTEGER AS add_to_carts, "
        "NULL::INTEGER AS purchases WHERE false"
    ),
}

_COLUMNS = (
    "event_id, event_type, user_id, item_id, surface, timestamp, category, brand, "
    "price, quantity, date"
)


def day_text(value: str) -> str:
    """``value`` as an ISO date, validated: only a date reaches the SQL."""
    return date.fromisoformat(value).isoformat()


def stamp_text(value: str) -> str:
    """An as_of stamp as ``as_of_text`` makes it, validated before it reaches the SQL."""
    if value[10:] != "T00:00:00.000Z":
        raise ValueError(f"not an as_of stamp: {value!r}")
    day_text(value[:10])
    return value


def _weight_case() -> str:
    arms = " ".join(f"WHEN '{t}' THEN {int(w)}" for t, w in EVENT_WEIGHTS.items())
    return f"CASE event_type {arms} ELSE 0 END"


def events_sql(source: str, *, dedupe: bool, exclude_user: bool = False) -> str:
    """The weighted item events of ``source`` (a relation with the archive's columns).

    ``dedupe`` keeps one row per event id (a re-published event is archived again under
    a new bus offset). ``exclude_user`` leaves out the users of the list ``$users``.
    """
    types = ", ".join(f"'{t}'" for t in EVENT_WEIGHTS)
    where = f"item_id IS NOT NULL AND event_type IN ({types})"
    if exclude_user:
        where += " AND NOT list_contains($users, user_id)"
    dedupe_clause = (
        ("QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY timestamp, surface) = 1")
        if dedupe
        else ""
    )
    return (
        f"SELECT {_COLUMNS}, {_weight_case()} AS w FROM (SELECT {_COLUMNS} FROM {source}) "
        f"WHERE {where} {dedupe_clause}"
    )


def user_item_day_sql(events: str) -> str:
    """One row per (day, user, item): counts, spend, weight and the last interaction."""
    return f"""
        SELECT date, user_id, item_id, max(category) AS category, max(brand) AS brand,
               count(*) FILTER (WHERE event_type = 'view')::INTEGER AS views,
               count(*) FILTER (WHERE event_type = 'click')::INTEGER AS clicks,
               count(*) FILTER (WHERE event_type = 'purchase')::INTEGER AS purchases,
               coalesce(sum(coalesce(price, 0) * coalesce(quantity, 1))
                        FILTER (WHERE event_type = 'purchase'), 0)::DOUBLE AS spend,
               sum(w)::DOUBLE AS weight, max(timestamp) AS last_at,
               count(*) FILTER (WHERE event_type = 'save')::INTEGER AS saves,
               count(*) FILTER (WHERE event_type = 'add_to_cart')::INTEGER AS add_to_carts
        FROM {events} GROUP BY date, user_id, item_id"""


def item_pair_day_sql(user_items: str, cfg: BatchSettings) -> str:
    """Pairs of items the same user viewed, clicked or bought on the same day.

    Each user-day contributes its ``covis_items_per_user_day`` strongest items only:
    one very active account must not add millions of pairs.
    """
    return pairs_sql(user_items, COVIS_TYPES, cfg.covis_items_per_user_day)


def pairs_sql(user_items: str, types: Sequence[str], cap: int) -> str:
    """Pairs of items the same user interacted with (events of ``types``) the same day,
    from the user's ``cap`` strongest items of that day (by the batch's own weights)."""
    cap = int(cap)
    basket = " + ".join(TYPE_COLUMNS[t] for t in TYPE_COLUMNS if t in types)
    return f"""
        WITH capped AS (
            SELECT date, user_id, item_id FROM {user_items}
            WHERE {basket} > 0
            QUALIFY row_number() OVER (PARTITION BY date, user_id
                                       ORDER BY weight DESC, last_at DESC, item_id) <= {cap})
        SELECT a.date, a.item_id AS item_a, b.item_id AS item_b, count(*)::INTEGER AS users
        FROM capped a JOIN capped b
          ON a.date = b.date AND a.user_id = b.user_id AND a.item_id < b.item_id
        GROUP BY a.date, a.item_id, b.item_id"""


def item_pop_day_sql(events: str) -> str:
    """Per day, surface and item: events, distinct users and weighted score."""
    return f"""
        SELECT date, surface, item_id, max(category) AS category, max(brand) AS brand,
               count(*)::INTEGER AS events, count(DISTINCT user_id)::INTEGER AS users,
               sum(w)::DOUBLE AS score, {_type_counts()}
        FROM {events} GROUP BY date, surface, item_id"""


def _type_counts() -> str:
    return ", ".join(
        f"count(*) FILTER (WHERE event_type = '{t}')::INTEGER AS {c}"
        for t, c in TYPE_COLUMNS.items()
    )


def as_of_text(end_day: str) -> str:
    """The as_of of outputs whose window ends with ``end_day``: the end of that day (UTC)."""
    return f"{date.fromisoformat(end_day) + timedelta(days=1)}T00:00:00.000Z"

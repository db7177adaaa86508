"""The batch SQL as it was before batch features could be declared, kept verbatim (only
this docstring and the imports differ): the oracle of
``test_declared_batch.py::test_the_defaults_reproduce_the_fixed_sql_exactly``.
"""

# ruff: noqa
from __future__ import annotations

from datetime import date, timedelta

from headwater.batch import EVENT_WEIGHTS, BatchSettings

__all__ = [
    "DAY_TABLES",
    "EMPTY",
    "as_of_text",
    "events_sql",
    "item_covis_sql",
    "item_pair_day_sql",
    "item_pop_day_sql",
    "item_pop_sql",
    "user_batch_sql",
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
        "NULL::DOUBLE AS weight, NULL::TIMESTAMPTZ AS last_at WHERE false"
    ),
    "item_pair_day": (
        "SELECT NULL::VARCHAR AS date, NULL::VARCHAR AS item_a, NULL::VARCHAR AS item_b, "
        "NULL::INTEGER AS users WHERE false"
    ),
    "item_pop_day": (
        "SELECT NULL::VARCHAR AS date, NULL::VARCHAR AS surface, NULL::VARCHAR AS item_id, "
        "NULL::VARCHAR AS category, NULL::VARCHAR AS brand, NULL::INTEGER AS events, "
        "NULL::INTEGER AS users, NULL::DOUBLE AS score WHERE false"
    ),
}

_COLUMNS = (
    "event_id, event_type, user_id, item_id, surface, timestamp, category, brand, "
    "price, quantity, date"
)


def _day(value: str) -> str:
    return date.fromisoformat(value).isoformat()  # validates: only a date reaches the SQL


def _stamp(value: str) -> str:
    # An as_of stamp as as_of_text makes it: validated before it reaches the SQL.
    if value[10:] != "T00:00:00.000Z":
        raise ValueError(f"not an as_of stamp: {value!r}")
    _day(value[:10])
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
               sum(w)::DOUBLE AS weight, max(timestamp) AS last_at
        FROM {events} GROUP BY date, user_id, item_id"""


def item_pair_day_sql(user_items: str, cfg: BatchSettings) -> str:
    """Pairs of items the same user viewed, clicked or bought on the same day.

    Each user-day contributes its ``covis_items_per_user_day`` strongest items only:
    one very active account must not add millions of pairs.
    """
    cap = int(cfg.covis_items_per_user_day)
    return f"""
        WITH capped AS (
            SELECT date, user_id, item_id FROM {user_items}
            WHERE views + clicks + purchases > 0
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
               sum(w)::DOUBLE AS score
        FROM {events} GROUP BY date, surface, item_id"""


def _json_list(expr: str, order: str, where: str) -> str:
    # A JSON array built as text: DuckDB's to_json of nested structs costs ~15 us a row,
    # text concatenation of already-quoted parts a fraction of that.
    agg = f"string_agg({expr}, ',' ORDER BY {order}) FILTER (WHERE {where})"
    return f"'[' || coalesce({agg}, '') || ']'"


def user_batch_sql(
    user_items: str, *, as_of_day: str, short_start: str, as_of: str, cfg: BatchSettings
) -> str:
    """``(user_id, json)`` per user active in the window, ordered by user id.

    ``user_items`` holds the window's user_item_day rows; ``short_start`` is the first
    day of the short (30-day) window. Affinities are ``[[value, share], ...]``, strongest
    first; item lists are newest purchase first and strongest interest first.
    """
    del as_of_day  # the window end is in as_of; kept in the signature for callers' clarity
    top = int(cfg.affinity_top_n)
    kept = int(cfg.purchased_items_kept)
    short = f"date >= '{_day(short_start)}'"
    long_n, short_n = int(cfg.lookback_days), int(cfg.affinity_short_days)

    def aff(dim: str) -> str:
        return f"""SELECT user_id, '{dim}' AS dim, {dim} AS value,
                       coalesce(sum(weight) FILTER (WHERE {short}), 0) AS w_short,
                       sum(weight) AS w_long
                   FROM {user_items} WHERE {dim} IS NOT NULL GROUP BY user_id, {dim}"""

    def ranked(dim: str, window: str) -> str:
        pair = f"'[' || quoted || ',' || round(s_{window}, 4)::VARCHAR || ']'"
        where = f"dim = '{dim}' AND s_{window} > 0 AND r_{window} <= {top}"
        return _json_list(pair, f"r_{window}", where)

    def field(name: str, value: str) -> str:
        return f"'\"{name}\":' || {value}"

    fields = ", ".join(
        [
            f'\'{{"as_of":"{_stamp(as_of)}"\'',
            field(f"category_affinity_{short_n}d", "coalesce(a.category_short, '[]')"),
            field(f"category_affinity_{long_n}d", "coalesce(a.category_long, '[]')"),
            field(f"brand_affinity_{short_n}d", "coalesce(a.brand_short, '[]')"),
            field(f"brand_affinity_{long_n}d", "coalesce(a.brand_long, '[]')"),
            field(f"distinct_items_viewed_{long_n}d", "i.distinct_viewed::VARCHAR"),
            field(f"purchases_{long_n}d", "s.purchases::VARCHAR"),
            field(f"spend_{long_n}d", "s.spend::VARCHAR"),
            field(f"active_days_{long_n}d", "s.active_days::VARCHAR"),
            field("last_active_day", "to_json(s.last_day)::VARCHAR"),
            field(f"purchased_items_{long_n}d", "i.purchased"),
            field(f"top_items_{short_n}d", "i.top_short") + " || '}'",
        ]
    )
    return f"""
        WITH aff AS ({aff("category")} UNION ALL {aff("brand")}),
        totals AS (
            SELECT user_id, dim, sum(w_short) AS t_short, sum(w_long) AS t_long
            FROM aff GROUP BY user_id, dim),
        ranks AS (
            SELECT user_id, dim, value, to_json(value)::VARCHAR AS quoted,
                   w_short / nullif(t_short, 0) AS s_short, w_long / t_long AS s_long,
                   row_number() OVER (PARTITION BY user_id, dim
                                      ORDER BY w_short DESC, value) AS r_short,
                   row_number() OVER (PARTITION BY user_id, dim
                                      ORDER BY w_long DESC, value) AS r_long
            FROM aff JOIN totals USING (user_id, dim)),
        affj AS (
            SELECT user_id,
                   {ranked("category", "short")} AS category_short,
                   {ranked("category", "long")} AS category_long,
                   {ranked("brand", "short")} AS brand_short,
                   {ranked("brand", "long")} AS brand_long
            FROM ranks WHERE r_short <= {top} OR r_long <= {top} GROUP BY user_id),
        per_item AS (
            SELECT user_id, item_id, sum(views) AS views,
                   coalesce(sum(weight) FILTER (WHERE {short}), 0) AS w_short,
                   max(last_at) FILTER (WHERE purchases > 0) AS bought_at
            FROM {user_items} GROUP BY user_id, item_id),
        item_ranks AS (
            SELECT *, to_json(item_id)::VARCHAR AS quoted,
                   row_number() OVER (PARTITION BY user_id
                                      ORDER BY bought_at DESC NULLS LAST, item_id) AS r_bought,
                   row_number() OVER (PARTITION BY user_id
                                      ORDER BY w_short DESC, item_id) AS r_short
            FROM per_item),
        items AS (
            SELECT user_id, count(*) FILTER (WHERE views > 0) AS distinct_viewed,
                   {
        _json_list(
            "quoted", "bought_at DESC, item_id", f"bought_at IS NOT NULL AND r_bought <= {kept}"
        )
    } AS purchased,
                   {
        _json_list("quoted", "w_short DESC, item_id", "w_short > 0 AND r_short <= 20")
    } AS top_short
            FROM item_ranks GROUP BY user_id),
        stats AS (
            SELECT user_id, count(DISTINCT date) AS active_days, max(date) AS last_day,
                   sum(purchases)::BIGINT AS purchases, round(sum(spend), 2) AS spend
            FROM {user_items} GROUP BY user_id)
        SELECT s.user_id, concat_ws(',', {fields}) AS doc
        FROM stats s JOIN items i USING (user_id) LEFT JOIN affj a USING (user_id)
        ORDER BY s.user_id"""


def item_covis_sql(pairs: str, *, as_of: str, window_days: int, cfg: BatchSettings) -> str:
    """``(item_id, json)``: each item's top-N co-visited items over the window."""
    return f"""
        WITH p AS (SELECT item_a, item_b, sum(users)::BIGINT AS s FROM {pairs}
                   GROUP BY item_a, item_b HAVING sum(users) >= {int(cfg.covis_min_support)}),
        both_ways AS (SELECT item_a AS item, item_b AS other, s FROM p
                      UNION ALL SELECT item_b, item_a, s FROM p),
        top AS (SELECT * FROM both_ways
                QUALIFY row_number() OVER (PARTITION BY item ORDER BY s DESC, other)
                        <= {int(cfg.covis_top_n)})
        SELECT item AS key, to_json({{
            'as_of': '{_stamp(as_of)}', 'window_days': {int(window_days)},
            'items': list({{'item_id': other, 'score': s}} ORDER BY s DESC, other)
        }})::VARCHAR AS doc
        FROM top GROUP BY item ORDER BY item"""


def item_pop_sql(pop: str, *, as_of: str, recent_start: str, cfg: BatchSettings) -> str:
    """``(key, json)``: top items per ``surface:day``, per ``surface:7d`` and ``*:7d``."""
    n = int(cfg.popularity_top_n)
    days = int(cfg.popularity_days)
    recent = f"date >= '{_day(recent_start)}'"
    return f"""
        WITH daily AS (
            SELECT surface || ':' || date AS key, surface, date AS win, item_id, category,
                   brand, events, score FROM {pop}),
        rolling AS (
            SELECT surface || ':{days}d' AS key, surface, '{days}d' AS win, item_id,
                   max(category) AS category, max(brand) AS brand,
                   sum(events)::BIGINT AS events, sum(score) AS score
            FROM {pop} WHERE {recent} GROUP BY surface, item_id
            UNION ALL
            SELECT '*:{days}d', '*', '{days}d', item_id, max(category), max(brand),
                   sum(events)::BIGINT, sum(score)
            FROM {pop} WHERE {recent} GROUP BY item_id),
        ranked AS (
            SELECT * FROM (SELECT key, surface, win, item_id, category, brand,
                                  events::BIGINT AS events, score FROM daily
                           UNION ALL SELECT * FROM rolling)
            QUALIFY row_number() OVER (PARTITION BY key ORDER BY score DESC, item_id) <= {n})
        SELECT key, to_json({{
            'as_of': '{_stamp(as_of)}', 'surface': any_value(surface), 'window': any_value(win),
            'items': list({{'item_id': item_id, 'score': score, 'events': events,
                           'category': category, 'brand': brand}}
                          ORDER BY score DESC, item_id)
        }})::VARCHAR AS doc
        FROM ranked GROUP BY key ORDER BY key"""


def as_of_text(end_day: str) -> str:
    """The as_of of outputs whose window ends with ``end_day``: the end of that day (UTC)."""
    return f"{date.fromisoformat(end_day) + timedelta(days=1)}T00:00:00.000Z"

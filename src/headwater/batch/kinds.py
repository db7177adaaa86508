"""The SQL of each batch feature kind, generated from its declaration (``declared.py``).

One generator per kind: ``affinity`` (fields of the user row, ``user_batch_sql``),
``co_visitation`` (``item_covis_sql``) and ``popularity`` (``item_pop_sql``). Each reads
the day aggregates of ``sql.py`` over the feature's window. A feature declared with the
batch's own weights reads the precomputed ``weight``/``score`` columns; another
weighting is computed from the per-type counts. Only validated names, dates and numbers
are put into the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from headwater.batch.declared import COVIS_TYPES, TYPE_COLUMNS, BatchFeature
from headwater.batch.settings import BatchSettings
from headwater.batch.sql import day_text, pairs_sql, stamp_text

__all__ = ["covis_from_pair_table", "item_covis_sql", "item_pop_sql", "user_batch_sql"]


def _start(end_day: str, days: int) -> str:
    return (date.fromisoformat(end_day) - timedelta(days=int(days) - 1)).isoformat()


def _json_list(expr: str, order: str, where: str) -> str:
    # A JSON array built as text: DuckDB's to_json of nested structs costs ~15 us a row,
    # text concatenation of already-quoted parts a fraction of that.
    agg = f"string_agg({expr}, ',' ORDER BY {order}) FILTER (WHERE {where})"
    return f"'[' || coalesce({agg}, '') || ']'"


def _weighted(f: BatchFeature, default: str) -> str:
    """The weighted interactions of a day-aggregate row, as ``f`` weighs them."""
    if f.default_weights:
        return default
    terms = [f"{TYPE_COLUMNS[t]} * {float(w)!r}::DOUBLE" for t, w in f.weights.items()]
    return f"({' + '.join(terms)})"


def _counted(f: BatchFeature) -> str:
    return f"({' + '.join(TYPE_COLUMNS[t] for t in f.weights)})"


def _affinity_ctes(
    user_items: str, affinities: Sequence[BatchFeature], *, as_of_day: str, long_days: int
) -> tuple[str, list[str]]:
    """The CTEs of the affinities (ending with ``affj``) and each one's column there.

    Features over different attributes share a slot (a weight column and its rank): the
    default two per attribute rank twice per row, as the fixed SQL did.
    """
    by_attr: dict[str, list[tuple[int, BatchFeature]]] = {}
    for i, f in enumerate(affinities):
        by_attr.setdefault(f.attribute, []).append((i, f))
    slots = max(len(v) for v in by_attr.values())
    slot_of = {i: j for group in by_attr.values() for j, (i, _f) in enumerate(group)}

    def weight(f: BatchFeature) -> str:
        w = _weighted(f, "weight")
        if f.window_days >= long_days:
            return f"sum({w})"
        start = day_text(_start(as_of_day, f.window_days))
        return f"coalesce(sum({w}) FILTER (WHERE date >= '{start}'), 0)"

    arms = []
    for attr, group in by_attr.items():
        cols = [weight(f) for _i, f in group] + ["0::DOUBLE"] * (slots - len(group))
        ws = ", ".join(f"{c} AS w_{j}" for j, c in enumerate(cols))
        arms.append(
            f"SELECT user_id, '{attr}' AS dim, {attr} AS value, {ws} "
            f"FROM {user_items} WHERE {attr} IS NOT NULL GROUP BY user_id, {attr}"
        )
    rng = range(slots)
    totals = ", ".join(f"sum(w_{j}) AS t_{j}" for j in rng)
    shares = ", ".join(f"w_{j} / nullif(t_{j}, 0) AS s_{j}" for j in rng)
    ranks = ", ".join(
        f"row_number() OVER (PARTITION BY user_id, dim ORDER BY w_{j} DESC, value) AS r_{j}"
        for j in rng
    )
    tops = [max(f.top_k for i, f in enumerate(affinities) if slot_of[i] == j) for j in rng]
    keep = " OR ".join(f"r_{j} <= {int(top)}" for j, top in enumerate(tops))

    def ranked(i: int, f: BatchFeature) -> str:
        j = slot_of[i]
        pair = f"'[' || quoted || ',' || round(s_{j}, 4)::VARCHAR || ']'"
        where = f"dim = '{f.attribute}' AND s_{j} > 0 AND r_{j} <= {int(f.top_k)}"
        return f"{_json_list(pair, f'r_{j}', where)} AS a_{i}"

    lists = ", ".join(ranked(i, f) for i, f in enumerate(affinities))
    ctes = f"""aff AS ({" UNION ALL ".join(arms)}),
        totals AS (SELECT user_id, dim, {totals} FROM aff GROUP BY user_id, dim),
        ranks AS (
            SELECT user_id, dim, value, to_json(value)::VARCHAR AS quoted, {shares}, {ranks}
            FROM aff JOIN totals USING (user_id, dim)),
        affj AS (SELECT user_id, {lists} FROM ranks WHERE {keep} GROUP BY user_id),"""
    return ctes, [f"coalesce(a.a_{i}, '[]')" for i in range(len(affinities))]


def user_batch_sql(
    user_items: str, *, as_of_day: str, short_start: str, as_of: str, cfg: BatchSettings
) -> str:
    """``(user_id, json)`` per user active in the window, ordered by user id.

    ``user_items`` holds the window's user_item_day rows; ``short_start`` is the first
    day of the short (30-day) window of the fixed fields. The declared affinities come
    first, in declaration order, as ``[[value, share], ...]``, strongest first; then the
    fixed fields: item lists newest purchase first and strongest interest first.
    """
    kept = int(cfg.purchased_items_kept)
    short = f"date >= '{day_text(short_start)}'"
    long_n, short_n = int(cfg.lookback_days), int(cfg.affinity_short_days)
    affinities = [f for f in cfg.features() if f.kind == "affinity"]

    def field(name: str, value: str) -> str:
        return f"'\"{name}\":' || {value}"

    aff_ctes, aff_values = "", list[str]()
    if affinities:
        aff_ctes, aff_values = _affinity_ctes(
            user_items, affinities, as_of_day=as_of_day, long_days=long_n
        )
    fields = ", ".join(
        [
            f'\'{{"as_of":"{stamp_text(as_of)}"\'',
            *(field(f.name, v) for f, v in zip(affinities, aff_values, strict=True)),
            field(f"distinct_items_viewed_{long_n}d", "i.distinct_viewed::VARCHAR"),
            field(f"purchases_{long_n}d", "s.purchases::VARCHAR"),
            field(f"spend_{long_n}d", "s.spend::VARCHAR"),
            field(f"active_days_{long_n}d", "s.active_days::VARCHAR"),
            field("last_active_day", "to_json(s.last_day)::VARCHAR"),
            field(f"purchased_items_{long_n}d", "i.purchased"),
            field(f"top_items_{short_n}d", "i.top_short") + " || '}'",
        ]
    )
    purchased = _json_list(
        "quoted", "bought_at DESC, item_id", f"bought_at IS NOT NULL AND r_bought <= {kept}"
    )
    top_short = _json_list("quoted", "w_short DESC, item_id", "w_short > 0 AND r_short <= 20")
    join_aff = "LEFT JOIN affj a USING (user_id)" if affinities else ""
    return f"""
        WITH {aff_ctes}
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
                   {purchased} AS purchased, {top_short} AS top_short
            FROM item_ranks GROUP BY user_id),
        stats AS (
            SELECT user_id, count(DISTINCT date) AS active_days, max(date) AS last_day,
                   sum(purchases)::BIGINT AS purchases, round(sum(spend), 2) AS spend
            FROM {user_items} GROUP BY user_id)
        SELECT s.user_id, concat_ws(',', {fields}) AS doc
        FROM stats s JOIN items i USING (user_id) {join_aff}
        ORDER BY s.user_id"""


def covis_from_pair_table(f: BatchFeature, cfg: BatchSettings) -> bool:
    """True when ``f``'s pairs are those of the precomputed ``item_pair_day`` table (its
    basket and cap); otherwise they are computed from ``user_item_day`` at run time."""
    return set(f.weights) == set(COVIS_TYPES) and f.items_per_user_day == int(
        cfg.covis_items_per_user_day
    )


def item_covis_sql(
    source: str, f: BatchFeature, *, as_of: str, from_user_items: bool = False
) -> str:
    """``(item_id, json)``: each item's top co-visited items over ``f``'s window.

    ``source`` is the window's ``item_pair_day`` rows, or its ``user_item_day`` rows when
    ``from_user_items`` (a basket or cap other than the pair table's).
    """
    pairs = source
    if from_user_items:
        pairs = f"({pairs_sql(source, list(f.weights), f.items_per_user_day)})"
    return f"""
        WITH p AS (SELECT item_a, item_b, sum(users)::BIGINT AS s FROM {pairs}
                   GROUP BY item_a, item_b HAVING sum(users) >= {int(f.min_support)}),
        both_ways AS (SELECT item_a AS item, item_b AS other, s FROM p
                      UNION ALL SELECT item_b, item_a, s FROM p),
        top AS (SELECT * FROM both_ways
                QUALIFY row_number() OVER (PARTITION BY item ORDER BY s DESC, other)
                        <= {int(f.top_k)})
        SELECT item AS key, to_json({{
            'as_of': '{stamp_text(as_of)}', 'window_days': {int(f.window_days)},
            'items': list({{'item_id': other, 'score': s}} ORDER BY s DESC, other)
        }})::VARCHAR AS doc
        FROM top GROUP BY item ORDER BY item"""


def item_pop_sql(pop: str, f: BatchFeature, *, as_of: str, as_of_day: str) -> str:
    """``(key, json)``: top items per ``surface:<n>d`` and ``*:<n>d`` over ``f``'s window
    of n days, and per ``surface:day`` for every day of ``pop`` when ``f.daily``."""
    n = int(f.top_k)
    days = int(f.window_days)
    recent = f"date >= '{day_text(_start(as_of_day, days))}'"
    if not f.default_weights:
        # Other weights or types: the score and count of f's types; items without any go.
        counted = _counted(f)
        pop = f"""(SELECT date, surface, item_id, category, brand, {counted} AS events,
                          {_weighted(f, "score")} AS score
                   FROM {pop} WHERE {counted} > 0)"""
    daily = (
        f"""SELECT surface || ':' || date AS key, surface, date AS win, item_id, category,
                   brand, events::BIGINT AS events, score FROM {pop}
            UNION ALL """
        if f.daily
        else ""
    )
    return f"""
        WITH rolling AS (
            SELECT surface || ':{days}d' AS key, surface, '{days}d' AS win, item_id,
                   max(category) AS category, max(brand) AS brand,
                   sum(events)::BIGINT AS events, sum(score) AS score
            FROM {pop} WHERE {recent} GROUP BY surface, item_id
            UNION ALL
            SELECT '*:{days}d', '*', '{days}d', item_id, max(category), max(brand),
                   sum(events)::BIGINT, sum(score)
            FROM {pop} WHERE {recent} GROUP BY item_id),
        ranked AS (
            SELECT * FROM ({daily}SELECT * FROM rolling)
            QUALIFY row_number() OVER (PARTITION BY key ORDER BY score DESC, item_id) <= {n})
        SELECT key, to_json({{
            'as_of': '{stamp_text(as_of)}', 'surface': any_value(surface), 'window': any_value(win),
            'items': list({{'item_id': item_id, 'score': score, 'events': events,
                           'category': category, 'brand': brand}}
                          ORDER BY score DESC, item_id)
        }})::VARCHAR AS doc
        FROM ranked GROUP BY key ORDER BY key"""

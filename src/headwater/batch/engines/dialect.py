"""The batch's SQL, written in DuckDB's dialect, in Spark's: sqlglot plus three rewrites.

sqlglot transpiles most of it (``QUALIFY`` into a subquery, ``FILTER``, casts, ordered
``string_agg`` into ``listagg ... WITHIN GROUP``). What it cannot know is done here:

- ``read_parquet([files], ...)`` becomes a temporary view over those files (the caller
  makes it: ``parquet``); the ``date=`` directories are its partition column;
- ``$name`` parameters become literal arrays (the only parameter the batch passes is
  a list of user ids: ``list_contains($users, user_id)``);
- ``list(x ORDER BY ...)`` keeps its order (sqlglot's ``collect_list`` would not):
  ``transform(array_sort(collect_list(named_struct(keys..., x)), comparator), ...)``;
- ``to_json`` of a string (a JSON-quoted string) quotes it through a one-item array,
  since Spark's ``to_json`` takes structs, maps and arrays only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlglot
from sqlglot import exp

__all__ = ["to_spark"]

Parquet = Callable[[Sequence[str]], str]


def to_spark(
    sql: str, *, parameters: Mapping[str, Any] | None = None, parquet: Parquet
) -> exp.Expr:
    """One DuckDB statement as a tree ready for ``.sql("spark")``; ``parquet`` names a
    view over a list of Parquet files."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    params = dict(parameters or {})

    def rewrite(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Placeholder | exp.Parameter):
            name = node.name
            if name not in params:
                raise ValueError(f"no value for the parameter ${name}")
            return exp.convert(params[name])
        if isinstance(node, exp.Table) and isinstance(node.this, exp.ReadParquet):
            view = parquet(_parquet_files(node.this))
            return exp.Table(this=exp.to_identifier(view), alias=node.args.get("alias"))
        if isinstance(node, exp.ArrayAgg) and isinstance(node.this, exp.Order):
            return _ordered_list(node.this)
        if isinstance(node, exp.Anonymous) and node.name.lower() == "to_json":
            (arg,) = node.expressions
            if not isinstance(arg, exp.Struct):
                return _json_quoted(arg)
        return node

    return tree.transform(rewrite)


def _parquet_files(call: exp.ReadParquet) -> list[str]:
    first = call.expressions[0]
    items = first.expressions if isinstance(first, exp.Array) else [first]
    return [str(item.this) for item in items]


def _spark(node: exp.Expr) -> str:
    return node.sql("spark")


def _ordered_list(order: exp.Order) -> exp.Expr:
    """``list(value ORDER BY k1 [DESC], ...)``: collect (keys, value), sort, keep values."""
    keys: list[exp.Ordered] = list(order.expressions)
    fields = [f"'k{i}', {_spark(k.this)}" for i, k in enumerate(keys)]
    fields.append(f"'v', {_spark(order.this)}")
    arms = []
    for i, k in enumerate(keys):
        lo, hi = ("1", "-1") if k.args.get("desc") else ("-1", "1")
        arms.append(f"WHEN _l.k{i} < _r.k{i} THEN {lo} WHEN _l.k{i} > _r.k{i} THEN {hi}")
    text = (
        f"transform(array_sort(collect_list(named_struct({', '.join(fields)})), "
        f"(_l, _r) -> CASE {' '.join(arms)} ELSE 0 END), _e -> _e.v)"
    )
    return sqlglot.parse_one(text, read="spark")


def _json_quoted(arg: exp.Expr) -> exp.Expr:
    """``to_json(x)`` of a scalar: the JSON text of ``[x]`` without its brackets."""
    inner = f"to_json(array({_spark(arg)}))"
    return sqlglot.parse_one(f"substring({inner}, 2, length({inner}) - 2)", read="spark")

"""Which ``pip install 'headwater[...]'`` extra brings which optional package.

A missing optional package is reported as ``MissingDependencyError`` naming the extra,
never as a raw ``ModuleNotFoundError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from headwater.errors import MissingDependencyError

__all__ = ["EXTRAS", "extra_for", "needs_extra"]

#: Top-level module -> the extra that installs it.
EXTRAS: dict[str, str] = {
    "fastapi": "server",
    "starlette": "server",
    "uvicorn": "server",
    "uvloop": "server",
    "httptools": "server",
    "cryptography": "server",
    "deltalake": "archive",
    "pyarrow": "archive",
    "duckdb": "archive",
    "confluent_kafka": "kafka",
    "nats": "nats",
    "redis": "redis",
    "psycopg": "postgres",
    "pyspark": "spark",
    "py4j": "spark",
    "sqlglot": "spark",
}


def extra_for(error: ModuleNotFoundError) -> MissingDependencyError | None:
    """The error to raise instead of ``error`` when an extra would have installed the
    missing module; None when the module is not an optional dependency."""
    top = (error.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return MissingDependencyError(extra, top, extra)


@contextmanager
def needs_extra() -> Iterator[None]:
    """Turn a missing optional package inside the block into ``MissingDependencyError``."""
    try:
        yield
    except ModuleNotFoundError as exc:
        missing = extra_for(exc)
        if missing is None:
            raise
        raise missing from None

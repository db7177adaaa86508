"""The engine port of the batch: a ``Protocol`` for callers and a registry by name."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from headwater.batch.settings import ENGINES, BatchSettings
from headwater.errors import ConfigurationError

__all__ = ["REGISTRY", "BatchConnection", "BatchEngine", "open_engine"]


class BatchConnection(Protocol):
    """What the batch asks of a connection: DuckDB's own API, the part the batch uses.

    ``execute`` takes one statement in DuckDB's dialect (``$name`` parameters) and
    returns something with ``fetchall()``; ``sql`` returns something with
    ``to_arrow_reader(rows)``; ``register`` makes an Arrow table a named relation.
    """

    def execute(self, sql: str, parameters: Mapping[str, Any] | None = ..., /) -> Any:
        """Run one statement."""

    def sql(self, sql: str, /) -> Any:
        """A query whose rows are read as Arrow batches."""

    def register(self, name: str, data: Any, /) -> Any:
        """An Arrow table under ``name``."""


class BatchEngine(Protocol):
    """Hands out connections of one engine; ``close`` releases what it holds."""

    name: str

    def connect(self) -> AbstractContextManager[Any]:
        """A connection for one run (or one erasure recompute)."""

    def close(self) -> None:
        """Release the engine (a Spark session); connections are closed by then."""


#: Engine name -> the module and class that implement it (imported on first use).
REGISTRY: dict[str, tuple[str, str]] = {
    "duckdb": ("headwater.batch.engines.duckdb", "DuckDBEngine"),
    "spark": ("headwater.batch.engines.spark", "SparkEngine"),
}
assert set(REGISTRY) == set(ENGINES)


def open_engine(cfg: BatchSettings, name: str | None = None) -> BatchEngine:
    """The engine ``name`` (default: ``cfg.engine``) configured from ``cfg``."""
    chosen = (name or cfg.engine).lower()
    if chosen not in REGISTRY:
        raise ConfigurationError(
            f"batch engine must be one of {', '.join(REGISTRY)}, not {chosen!r}"
        )
    module, cls = REGISTRY[chosen]
    engine: BatchEngine = getattr(importlib.import_module(module), cls)(cfg)
    return engine

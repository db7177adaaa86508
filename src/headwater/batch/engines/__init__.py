"""The engines the batch's SQL runs on: DuckDB (embedded, the default) and Spark.

The SQL is written once, in DuckDB's dialect (``batch/sql.py``, ``batch/kinds.py``);
the Spark engine transpiles each statement with sqlglot (``engines/dialect.py``). Both
hand out a connection with the same small API (``BatchConnection``), so the runner,
the outputs and the erasure recompute are the same code whichever engine runs them.
"""

from __future__ import annotations

from headwater.batch.engines.base import BatchConnection, BatchEngine, open_engine

__all__ = ["BatchConnection", "BatchEngine", "open_engine"]

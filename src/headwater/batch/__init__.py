"""The nightly batch: heavy features from the archive with DuckDB (or Spark: ``engines/``),
into the online store.

Per-user affinities over 30 and 90 days and aggregates too costly for the stream
(``user_batch``), item co-visitation (``item_covis``) and popularity per surface and
day (``item_pop``): the defaults of the batch features a features file can declare
(``batch:``, see ``declared.py``). Incremental by day partition, idempotent, with backfill; an
erasure participant (``batch-derived``) recomputes what a user contributed to.

The engine modules (DuckDB, deltalake, pyarrow: the ``archive`` extra) load on first
use, so readers of the namespaces, such as the gateway, do not need them.
"""

from __future__ import annotations

import importlib
from typing import Any

from headwater.batch.declared import (
    EVENT_WEIGHTS,
    BatchFeature,
    default_batch_features,
    load_batch_features,
)
from headwater.batch.namespaces import ITEM_COVIS, ITEM_POP, USER_BATCH
from headwater.batch.settings import BatchSettings

__all__ = [
    "EVENT_WEIGHTS",
    "ITEM_COVIS",
    "ITEM_POP",
    "USER_BATCH",
    "BatchErasureParticipant",
    "BatchFeature",
    "BatchRunner",
    "BatchScheduler",
    "BatchSettings",
    "RunReport",
    "default_batch_features",
    "load_batch_features",
    "next_run",
]

_LAZY = {
    "BatchErasureParticipant": "headwater.batch.erasure",
    "BatchRunner": "headwater.batch.runner",
    "RunReport": "headwater.batch.runner",
    "BatchScheduler": "headwater.batch.scheduler",
    "next_run": "headwater.batch.scheduler",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'headwater.batch' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

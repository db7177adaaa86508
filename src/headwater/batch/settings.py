"""Batch settings from ``HEADWATER_BATCH_*`` variables.

The batch keeps nothing in the working directory: its state (computed days, runs, the
lock) is in the control plane (``HEADWATER_CONTROL_URL``) and its day aggregates beside
the archive (``<HEADWATER_ARCHIVE_URL>/_batch``), so any host sharing those two runs it.

- ``HEADWATER_BATCH_DIR``: no longer used. When set (or when ``<home>/batch`` exists) it
  names the local directory of an earlier version, whose files the next batch run or
  erasure removes (a first run recomputes every day of the window).
- ``HEADWATER_BATCH_LOCK_LEASE``: how long the batch lock outlives a holder that stopped
  renewing it (a crashed host; default ``10m``, renewed every third of it).
- ``HEADWATER_BATCH_SCHEDULE``: when ``headwater up`` runs the batch: ``HH:MM`` (UTC,
  daily; default ``02:30``), ``every 6h``, or ``off``.
- ``HEADWATER_FEATURES_FILE``: its ``batch:`` section declares the batch features
  (``batch/declared.py``); without one, the defaults below.
- ``HEADWATER_BATCH_ENGINE``: ``duckdb`` (default: embedded, one machine) or ``spark``
  (the same SQL, transpiled, on a Spark cluster; needs ``headwater[spark]``).
- ``HEADWATER_SPARK_MASTER``: the Spark master of the ``spark`` engine: ``local[N]``
  (default ``local[2]``) or ``spark://host:port``.
- ``HEADWATER_BATCH_LOOKBACK_DAYS`` (90), ``HEADWATER_BATCH_COVIS_DAYS`` (30),
  ``HEADWATER_BATCH_COVIS_MIN_SUPPORT`` (2), ``HEADWATER_BATCH_MEMORY_LIMIT`` (``4GB``:
  DuckDB's memory limit; on Spark, the driver's memory, where a ``local[N]`` master's
  executors run too).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec

from headwater._duration import parse_duration
from headwater.batch.declared import (
    EVENT_WEIGHTS,
    BatchFeature,
    check_windows,
    default_batch_features,
    load_batch_features,
)
from headwater.config import Settings
from headwater.errors import ConfigurationError

__all__ = ["ENGINES", "EVENT_WEIGHTS", "BatchSettings"]

#: The engines the batch's SQL runs on (``batch/engines/``).
ENGINES = ("duckdb", "spark")

log = logging.getLogger("headwater.batch")


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, not {raw!r}") from None
    if value < 1:
        raise ConfigurationError(f"{name} must be at least 1")
    return value


class BatchSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the nightly batch computes, over which windows, and how long its lock lasts."""

    schedule: str = "02:30"
    lookback_days: int = 90
    affinity_short_days: int = 30
    covis_days: int = 30
    covis_top_n: int = 20
    covis_items_per_user_day: int = 30  # bounds the quadratic pair count of heavy users
    covis_min_support: int = 2
    popularity_days: int = 7
    popularity_top_n: int = 200
    affinity_top_n: int = 10
    purchased_items_kept: int = 100
    days_per_chunk: int = 7
    memory_limit: str = "4GB"
    threads: int = 0  # 0: DuckDB's default (every core)
    dedupe_event_ids: bool = True
    lock_lease_s: float = 600.0
    #: Which engine runs the batch's SQL: ``duckdb`` or ``spark``.
    engine: str = "duckdb"
    #: The Spark master of the ``spark`` engine (``local[N]`` or ``spark://host:port``).
    spark_master: str = "local[2]"
    #: The local batch directory of an earlier version, removed once the batch runs.
    legacy_dir: Path | None = None
    #: The ``batch:`` section of the features file; None: ``default_batch_features``.
    declared: tuple[BatchFeature, ...] | None = None

    def features(self) -> tuple[BatchFeature, ...]:
        """The batch features computed: the declared ones, else the defaults."""
        return default_batch_features(self) if self.declared is None else self.declared

    @classmethod
    def from_env(cls, settings: Settings) -> BatchSettings:
        """The batch settings of a deployment."""
        root = os.environ.get("HEADWATER_BATCH_DIR", "").strip()
        if root:
            log.warning(
                "HEADWATER_BATCH_DIR is no longer used: the batch's state is in the control "
                "plane (HEADWATER_CONTROL_URL) and its outputs beside the archive "
                "(HEADWATER_ARCHIVE_URL/_batch); the files the batch left in %s are removed "
                "at the next run. Unset HEADWATER_BATCH_DIR.",
                root,
            )
        lease = os.environ.get("HEADWATER_BATCH_LOCK_LEASE", "").strip() or "10m"
        path = settings.features_file
        engine = os.environ.get("HEADWATER_BATCH_ENGINE", "").strip().lower() or "duckdb"
        if engine not in ENGINES:
            raise ConfigurationError(
                f"HEADWATER_BATCH_ENGINE must be one of {', '.join(ENGINES)}, not {engine!r}"
            )
        cfg = cls(
            engine=engine,
            spark_master=os.environ.get("HEADWATER_SPARK_MASTER", "").strip() or "local[2]",
            legacy_dir=Path(root).expanduser() if root else settings.home / "batch",
            lock_lease_s=parse_duration(lease, "HEADWATER_BATCH_LOCK_LEASE"),
            schedule=os.environ.get("HEADWATER_BATCH_SCHEDULE", "").strip() or "02:30",
            lookback_days=_int("HEADWATER_BATCH_LOOKBACK_DAYS", 90),
            covis_days=_int("HEADWATER_BATCH_COVIS_DAYS", 30),
            covis_min_support=_int("HEADWATER_BATCH_COVIS_MIN_SUPPORT", 2),
            memory_limit=os.environ.get("HEADWATER_BATCH_MEMORY_LIMIT", "").strip() or "4GB",
            declared=load_batch_features(path) if path else None,
        )
        if path and cfg.declared is not None:
            check_windows(cfg.declared, cfg, path)
        return cfg

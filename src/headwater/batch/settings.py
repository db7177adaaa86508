"""Batch settings from ``HEADWATER_BATCH_*`` variables.

- ``HEADWATER_BATCH_DIR``: derived day aggregates and run state (default ``<home>/batch``).
- ``HEADWATER_BATCH_SCHEDULE``: when ``headwater up`` runs the batch: ``HH:MM`` (UTC,
  daily; default ``02:30``), ``every 6h``, or ``off``.
- ``HEADWATER_BATCH_LOOKBACK_DAYS`` (90), ``HEADWATER_BATCH_COVIS_DAYS`` (30),
  ``HEADWATER_BATCH_COVIS_MIN_SUPPORT`` (2), ``HEADWATER_BATCH_MEMORY_LIMIT`` (``4GB``).
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from headwater.config import Settings
from headwater.errors import ConfigurationError

__all__ = ["EVENT_WEIGHTS", "BatchSettings"]

#: How much one event of a type says about a user's interest in an item. Types not
#: listed (search, dismiss, rating) do not feed affinity, co-visitation or popularity.
EVENT_WEIGHTS: dict[str, int] = {"view": 1, "click": 2, "save": 3, "add_to_cart": 3, "purchase": 5}


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
    """What the nightly batch computes, over which windows, and where it keeps its work."""

    batch_dir: Path
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

    @classmethod
    def from_env(cls, settings: Settings) -> BatchSettings:
        """The batch settings of a deployment."""
        root = os.environ.get("HEADWATER_BATCH_DIR", "").strip()
        return cls(
            batch_dir=Path(root).expanduser() if root else settings.home / "batch",
            schedule=os.environ.get("HEADWATER_BATCH_SCHEDULE", "").strip() or "02:30",
            lookback_days=_int("HEADWATER_BATCH_LOOKBACK_DAYS", 90),
            covis_days=_int("HEADWATER_BATCH_COVIS_DAYS", 30),
            covis_min_support=_int("HEADWATER_BATCH_COVIS_MIN_SUPPORT", 2),
            memory_limit=os.environ.get("HEADWATER_BATCH_MEMORY_LIMIT", "").strip() or "4GB",
        )

"""Where the batch's results live in the online store (readers import these, not the batch)."""

from __future__ import annotations

__all__ = ["ITEM_COVIS", "ITEM_POP", "USER_BATCH"]

#: One JSON row per user active in the lookback window (affinities, costly aggregates).
USER_BATCH = "user_batch"
#: One JSON row per item: its most co-visited items.
ITEM_COVIS = "item_covis"
#: One JSON row per ``surface:day``, ``surface:7d`` and ``*:7d``: the top items.
ITEM_POP = "item_pop"

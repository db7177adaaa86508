"""What a recommendation answer holds, and the batch rows it reads.

Every answer says where each item comes from (``reason``), which features it used
with their ``as_of``, and whether the streaming features were stale, in which case
the recent activity was not used and the answer names its fallback.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "CovisRow",
    "FeatureUse",
    "PopularItem",
    "PopularityRow",
    "Recommendations",
    "RecommendedItem",
    "ScoredItem",
    "UserBatchRow",
]


class ScoredItem(msgspec.Struct, frozen=True):
    """An item with a score, as the batch stores co-visitation."""

    item_id: str
    score: float


class CovisRow(msgspec.Struct, frozen=True):
    """``item_covis`` row: an item's most co-visited items."""

    as_of: str
    items: list[ScoredItem] = []
    window_days: int = 0


class PopularItem(msgspec.Struct, frozen=True):
    """One entry of a popularity list."""

    item_id: str
    score: float
    events: int = 0
    category: str | None = None
    brand: str | None = None


class PopularityRow(msgspec.Struct, frozen=True):
    """``item_pop`` row: top items of a surface over a day or a rolling window."""

    as_of: str
    items: list[PopularItem] = []
    surface: str = ""
    window: str = ""


class UserBatchRow(msgspec.Struct, frozen=True):
    """The parts of a ``user_batch`` row recommendations use."""

    as_of: str
    purchased_items_90d: list[str] = []
    top_items_30d: list[str] = []


class RecommendedItem(msgspec.Struct, frozen=True):
    """One recommended item: score, the reason in words, and what it came from."""

    item_id: str
    score: float
    reason: str
    source: str  # "covisitation" or "popularity"
    because_of: list[str] = []


class FeatureUse(msgspec.Struct, frozen=True):
    """A feature the answer read: where from, as of when, and whether it was used."""

    source: str  # "streaming" or "batch"
    as_of: str | None
    used: bool
    stale: bool = False
    age_s: float | None = None
    note: str = ""


class Recommendations(msgspec.Struct, frozen=True):
    """``GET /v1/users/{user_id}/recommendations``."""

    user_id: str
    surface: str
    k: int
    items: list[RecommendedItem]
    stale: bool
    fallback: str | None
    features_used: dict[str, FeatureUse]
    excluded_purchased: int
    notes: list[str]
    generated_at: str

"""Recommendations: streaming recent activity expanded by batch co-visitation and popularity."""

from __future__ import annotations

from headwater.recommend.model import FeatureUse, Recommendations, RecommendedItem
from headwater.recommend.recommender import STREAM_FEATURES, Recommender

__all__ = ["STREAM_FEATURES", "FeatureUse", "Recommendations", "RecommendedItem", "Recommender"]

"""Recommendations from both paths: recent activity (stream) expanded by co-visitation (batch).

1. Seeds: the user's recently viewed and clicked items (streaming features), newest
   first. When the streaming answer is stale (past its freshness budget) the recent
   activity is not used as if it were fresh: the seeds come from the batch history
   (``top_items_30d``) and the answer says so.
2. Candidates: each seed's co-visited items, weighted by the seed's weight and the
   normalised co-visitation score.
3. Popularity fills the list when history is thin: the surface's rolling 7-day top
   items (all surfaces when the surface has none), boosted by the user's category
   affinity.
4. Purchased items (streaming ``last_purchase`` and the batch's 90-day purchases)
   and the seeds themselves are excluded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec

from headwater._time import now_text
from headwater.batch.declared import BatchFeature
from headwater.batch.namespaces import ITEM_COVIS, ITEM_POP, USER_BATCH
from headwater.online.base import OnlineStore
from headwater.recommend.model import (
    CovisRow,
    FeatureUse,
    PopularityRow,
    Recommendations,
    RecommendedItem,
    UserBatchRow,
)
from headwater.wire import UserFeatures

__all__ = ["STREAM_FEATURES", "Recommender"]

#: The streaming features recommendations read.
STREAM_FEATURES = ("recently_viewed", "recently_clicked", "last_purchase")

_SEED_WEIGHTS = {"recently_clicked": 1.5, "recently_viewed": 1.0}
_BATCH_SEED_WEIGHT = 0.8
_DECAY = 0.85  # each older seed counts this much less than the one before
_MAX_SEEDS = 10

_T = TypeVar("_T", bound=msgspec.Struct)


def _decode(data: bytes | None, kind: type[_T]) -> _T | None:
    if not data:
        return None
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.DecodeError:
        return None  # a row written by another version: ignore it rather than fail the read


class Recommender:
    """Ranks items for a user from the online store (streaming and batch rows).

    ``read_features`` is the streaming feature read (``FeatureReader.read``).
    Popularity lists are the same for every user and change once a night (or after an
    erasure recompute): they are cached for ``popularity_ttl_s``. ``covis``,
    ``popularity`` (with its window ``popularity_days``) and ``affinity`` name the batch
    features read (None: not used); ``over`` takes them from the declared batch features.
    """

    def __init__(
        self,
        read_features: Callable[..., UserFeatures],
        store: OnlineStore,
        *,
        popularity_ttl_s: float = 30.0,
        covis: str | None = ITEM_COVIS,
        popularity: str | None = ITEM_POP,
        popularity_days: int = 7,
        affinity: str | None = "category_affinity_30d",
    ) -> None:
        self.read_features = read_features
        self.store = store
        self.popularity_ttl_s = popularity_ttl_s
        self.covis = covis
        self.popularity = popularity
        self.popularity_days = popularity_days
        self.affinity = affinity
        self._pop: dict[str, tuple[float, PopularityRow | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def over(
        cls,
        read_features: Callable[..., UserFeatures],
        store: OnlineStore,
        features: Sequence[BatchFeature],
    ) -> Recommender:
        """A recommender reading the first declared co-visitation, the first popularity,
        and the first affinity over ``category`` of ``features``."""
        covis = next((f for f in features if f.kind == "co_visitation"), None)
        pop = next((f for f in features if f.kind == "popularity"), None)
        affinity = next(
            (f for f in features if f.kind == "affinity" and f.attribute == "category"), None
        )
        return cls(
            read_features,
            store,
            covis=covis.name if covis else None,
            popularity=pop.name if pop else None,
            popularity_days=pop.window_days if pop else 7,
            affinity=affinity.name if affinity else None,
        )

    def _popularity(self, surface: str) -> tuple[str, PopularityRow | None]:
        days = self.popularity_days
        if self.popularity is None:
            return f"{surface}:{days}d", None
        for key in (f"{surface}:{days}d", f"*:{days}d"):
            now = time.monotonic()
            with self._lock:
                cached = self._pop.get(key)
            if cached is None or now - cached[0] > self.popularity_ttl_s:
                row = _decode(self.store.get(self.popularity, [key]).get(key), PopularityRow)
                cached = (now, row)
                with self._lock:
                    self._pop[key] = cached
            if cached[1] is not None and cached[1].items:
                return key, cached[1]
        return f"{surface}:{days}d", None

    def recommend(self, user_id: str, *, k: int = 20, surface: str = "web") -> Recommendations:
        """Up to ``k`` items for ``user_id`` on ``surface``, each with its reason."""
        answer = self.read_features(user_id, list(STREAM_FEATURES))
        raw = self.store.get(USER_BATCH, [user_id]).get(user_id)
        batch = _decode(raw, UserBatchRow)
        affinity = self._affinity(raw)
        stream_ok = not answer.stale
        notes: list[str] = []
        seeds: dict[str, float] = {}
        used: dict[str, FeatureUse] = {}
        for name, weight in _SEED_WEIGHTS.items():
            entries = answer.features.get(name) or []
            if stream_ok:
                for rank, entry in enumerate(entries):
                    item = str(entry["item_id"])
                    seeds[item] = max(seeds.get(item, 0.0), weight * _DECAY**rank)
            used[name] = self._stream_use(answer, name, used=stream_ok and bool(entries))
        purchased = set(batch.purchased_items_90d) if batch else set()
        last = answer.features.get("last_purchase")
        has_last = isinstance(last, dict) and bool(last.get("item_id"))
        if isinstance(last, dict) and has_last:
            # A purchase stays a purchase when the answer is stale: always exclude it.
            purchased.add(str(last["item_id"]))
        used["last_purchase"] = self._stream_use(
            answer, "last_purchase", used=has_last, note="excludes the item last bought"
        )
        if not stream_ok:
            budget = min((answer.budgets_s.get(n, 0.0) for n in answer.stale_features), default=0.0)
            notes.append(
                f"streaming features are stale (age {answer.age_s}s, budget {budget:g}s): "
                "recent activity is not used; falling back to batch history and popularity"
            )
            if batch is not None:
                for rank, item in enumerate(batch.top_items_30d):
                    seeds[item] = _BATCH_SEED_WEIGHT * _DECAY**rank
        top_seeds = sorted(seeds, key=lambda s: (-seeds[s], s))[:_MAX_SEEDS]
        scores, because, covis_as_of = self._expand(top_seeds, seeds)
        excluded = {i for i in scores if i in purchased}
        ranked = sorted(
            (i for i in scores if i not in purchased and i not in seeds),
            key=lambda i: (-scores[i], i),
        )
        items = [
            RecommendedItem(
                item_id=i,
                score=round(1.0 + scores[i], 6),
                source="covisitation",
                because_of=because[i][:3],
                reason=_covis_reason(because[i], from_stream=stream_ok),
            )
            for i in ranked[:k]
        ]
        from_covis = bool(items)
        pop_key, pop_as_of = "", None
        if len(items) < k:
            taken = purchased | set(seeds) | {x.item_id for x in items}
            pop_key, pop_as_of, extra, skipped = self._fill(
                k - len(items), surface, affinity, taken
            )
            items.extend(extra)
            excluded |= skipped & purchased
        fallback: str | None = None
        if not stream_ok:
            fallback = "batch_history" if from_covis else "popularity"
        elif not from_covis:
            fallback = "popularity"
        used["user_batch"] = FeatureUse(
            source="batch",
            as_of=batch.as_of if batch else None,
            used=batch is not None,
            note="purchases (90d)"
            + (f" and {self.affinity}" if self.affinity else "")
            + ("" if stream_ok else "; top items (30d) as seeds"),
        )
        if self.covis is not None:
            used[self.covis] = FeatureUse(
                source="batch", as_of=covis_as_of, used=covis_as_of is not None
            )
        if self.popularity is not None:
            used[self.popularity] = FeatureUse(
                source="batch", as_of=pop_as_of, used=pop_as_of is not None, note=pop_key
            )
        return Recommendations(
            user_id=user_id,
            surface=surface,
            k=k,
            items=items,
            stale=answer.stale,
            fallback=fallback,
            features_used=used,
            excluded_purchased=len(excluded),
            notes=notes,
            generated_at=now_text(),
        )

    @staticmethod
    def _stream_use(answer: UserFeatures, name: str, *, used: bool, note: str = "") -> FeatureUse:
        return FeatureUse(
            source="streaming",
            as_of=answer.as_of,
            age_s=answer.age_s,
            stale=name in answer.stale_features,
            used=used,
            note=note,
        )

    def _expand(
        self,
        top_seeds: list[str],
        seeds: dict[str, float],
    ) -> tuple[dict[str, float], dict[str, list[str]], str | None]:
        scores: dict[str, float] = {}
        because: dict[str, list[str]] = {}
        as_of: str | None = None
        if self.covis is None:
            return scores, because, as_of
        rows = self.store.get(self.covis, top_seeds) if top_seeds else {}
        for seed in top_seeds:
            row = _decode(rows.get(seed), CovisRow)
            if row is None or not row.items:
                continue
            as_of = row.as_of if as_of is None else min(as_of, row.as_of)
            best = max(x.score for x in row.items) or 1.0
            for entry in row.items:
                scores[entry.item_id] = (
                    scores.get(entry.item_id, 0.0) + seeds[seed] * entry.score / best
                )
                because.setdefault(entry.item_id, []).append(seed)
        return scores, because, as_of

    def _fill(
        self,
        n: int,
        surface: str,
        affinity: dict[str, float],
        taken: set[str],
    ) -> tuple[str, str | None, list[RecommendedItem], set[str]]:
        key, row = self._popularity(surface)
        if row is None:
            return key, None, [], set()
        best = max(x.score for x in row.items) or 1.0
        ranked: list[tuple[float, str, str]] = []
        excluded: set[str] = set()
        where = "everywhere" if key.startswith("*") else f"on {row.surface}"
        for entry in row.items:
            if entry.item_id in taken:
                excluded.add(entry.item_id)
                continue
            like = affinity.get(entry.category or "", 0.0)
            score = 0.5 * entry.score / best * (1.0 + like)
            reason = f"popular {where} in the last {self.popularity_days} days"
            if like > 0:
                reason += f", in {entry.category}, a category you like"
            ranked.append((score, entry.item_id, reason))
        ranked.sort(key=lambda x: (-x[0], x[1]))
        items = [
            RecommendedItem(item_id=i, score=round(s, 6), reason=r, source="popularity")
            for s, i, r in ranked[:n]
        ]
        return key, row.as_of, items, excluded

    def _affinity(self, raw: bytes | None) -> dict[str, float]:
        """The user's shares of the declared category affinity (empty when none)."""
        if not raw or self.affinity is None:
            return {}
        try:
            doc: Any = msgspec.json.decode(raw)
            return {str(v): float(w) for v, w in doc.get(self.affinity) or []}
        except (msgspec.DecodeError, AttributeError, TypeError, ValueError):
            return {}  # a row written by another version: no boost rather than a failed read


def _covis_reason(because: list[str], *, from_stream: bool) -> str:
    seeds = ", ".join(because[:3])
    what = (
        "items you viewed or clicked recently" if from_stream else "items from your history (batch)"
    )
    return f"often viewed or bought together with {seeds} ({what})"

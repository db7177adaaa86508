"""Apply signals to per-user feature state, and read features with their freshness."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from headwater.contract.signal import Signal
from headwater.features.kinds import Reader, Updater, iso, reader_for, updater_for
from headwater.features.spec import DEFAULT_FEATURES, FeatureSpec

__all__ = ["FeatureEngine", "UserFeatures"]

_IDS = "_ids"  # recent event ids of the user: a re-delivered event is not applied twice
_WATERMARK = "_t"  # latest event time seen for the user (ms): the base of lateness
_LATE = "_late"  # events beyond the lateness bound (kept out of bucketed features)
_FIRST = "_first"  # earliest event time in the row (ms): proves a row postdates an erasure
RECENT_IDS = 32

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(dict[str, Any]).decode


class UserFeatures(msgspec.Struct):
    """One user's features as the API answers them."""

    user_id: str
    features: dict[str, Any]
    as_of: str | None
    age_s: float | None
    stale: bool
    stale_features: list[str]
    budgets_s: dict[str, float]
    found: bool = True


class FeatureEngine:
    """Declared features compiled into per-event-type update lists."""

    def __init__(
        self,
        specs: Sequence[FeatureSpec] = DEFAULT_FEATURES,
        *,
        lateness_ms: int = 3_600_000,
        budgets_s: Mapping[str, float] | None = None,
    ) -> None:
        self.specs = tuple(specs)
        self.lateness_ms = lateness_ms
        self.budgets_s = dict(budgets_s or {})
        self._updaters: dict[str, list[Updater]] = {}
        self._any: list[tuple[FeatureSpec, Updater]] = [(s, updater_for(s)) for s in self.specs]
        self._readers: dict[str, Reader] = {s.name: reader_for(s) for s in self.specs}
        self.late_events = 0
        self.duplicates = 0

    def _for_type(self, event_type: str) -> list[Updater]:
        found = self._updaters.get(event_type)
        if found is None:
            found = self._updaters[event_type] = [u for s, u in self._any if s.feeds_on(event_type)]
        return found

    def apply(self, state: dict[str, Any], signals: Iterable[Signal]) -> int:
        """Apply one user's signals (in bus order) to its state; the number applied."""
        ids: list[str] | None = state.get(_IDS)
        if ids is None:
            ids = state[_IDS] = []
        watermark: int = state.get(_WATERMARK, 0)
        first: int = state.get(_FIRST, 0)
        bound = self.lateness_ms
        updaters = self._updaters
        applied = late_count = 0
        for sig in signals:
            eid = sig.event_id
            ts = int(sig.timestamp.timestamp() * 1000)
            # A re-sent event carries its original time, which is never after the
            # watermark: only such events need the (costlier) look at recent ids.
            if ts <= watermark and eid in ids:
                self.duplicates += 1
                continue
            ids.append(eid)
            if ts < first or not first:
                first = ts
            late = ts < watermark - bound
            if late:
                late_count += 1
            elif ts > watermark:
                watermark = ts
            etype = sig.event_type
            for update in updaters.get(etype) or self._for_type(etype):
                update(state, sig, ts, late)
            applied += 1
        if len(ids) > RECENT_IDS:
            del ids[: len(ids) - RECENT_IDS]
        state[_WATERMARK] = watermark
        state[_FIRST] = first
        if late_count:
            state[_LATE] = state.get(_LATE, 0) + late_count
            self.late_events += late_count
        return applied

    @staticmethod
    def earliest(state: dict[str, Any]) -> int | None:
        """Time (ms) of the earliest event the row holds, if it holds any."""
        first = state.get(_FIRST)
        return int(first) if first else None

    @staticmethod
    def encode(state: dict[str, Any]) -> bytes:
        """The stored form of a state."""
        return _encode(state)

    @staticmethod
    def decode(data: bytes | None) -> dict[str, Any]:
        """A state from its stored form (empty for a new user)."""
        return _decode(data) if data else {}

    def budget_of(self, spec: FeatureSpec) -> float:
        """A feature's freshness budget: the strictest budget of the types feeding it."""
        if "*" in spec.event_types:
            relevant = list(self.budgets_s.values())
        else:
            relevant = [self.budgets_s[t] for t in spec.event_types if t in self.budgets_s]
        return min(relevant) if relevant else 300.0

    def read(
        self,
        user_id: str,
        state: dict[str, Any] | None,
        *,
        now_ms: int,
        as_of_ms: int | None,
        select: Sequence[str] | None = None,
    ) -> UserFeatures:
        """The user's features at ``now_ms``, stamped with as_of, age and staleness.

        A feature whose age (``now - as_of``) exceeds its budget is listed in
        ``stale_features`` and the answer is ``stale``: it is never presented as fresh.
        """
        specs = [s for s in self.specs if select is None or s.name in select]
        values = {s.name: self._readers[s.name]((state or {}).get(s.name), now_ms) for s in specs}
        budgets = {s.name: self.budget_of(s) for s in specs}
        age = None if as_of_ms is None else max(0.0, (now_ms - as_of_ms) / 1000)
        stale = [n for n, b in budgets.items() if age is None or age > b]
        return UserFeatures(
            user_id=user_id,
            features=values,
            as_of=iso(as_of_ms) if as_of_ms else None,
            age_s=None if age is None else round(age, 3),
            stale=bool(stale),
            stale_features=stale,
            budgets_s=budgets,
            found=bool(state),
        )

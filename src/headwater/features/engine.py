"""Apply signals to per-user feature state, and read features with their freshness."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from headwater.contract.definition import DEFAULT_FRESHNESS_BUDGET_S
from headwater.features.kinds import (
    FIRST,
    Reader,
    SignalView,
    compile_pass,
    compile_row_pass,
    implementation,
    reader_for,
)
from headwater.features.spec import DEFAULT_FEATURES, FeatureSpec
from headwater.wire import UserFeatures

if TYPE_CHECKING:
    from headwater.features.signals import SignalBatch

__all__ = ["DEFINITIONS", "FeatureEngine"]

#: Row key of the definition version each feature's value was computed under, for the
#: features defined after version 1 (a row without an entry holds version 1's value).
DEFINITIONS = "_v"

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(dict[str, Any]).decode


class FeatureEngine:
    """Declared features compiled into one update plan, applied a user's batch at a time."""

    def __init__(
        self,
        specs: Sequence[FeatureSpec] = DEFAULT_FEATURES,
        *,
        lateness_ms: int = 3_600_000,
        budgets_s: Mapping[str, float] | None = None,
        native: bool | None = None,
        version: int = 1,
        defined_in: Mapping[str, int] | None = None,
        backfilling: Sequence[str] = (),
    ) -> None:
        self.specs = tuple(specs)
        self.lateness_ms = lateness_ms
        self.budgets_s = dict(budgets_s or {})
        self.native = native
        #: The definition version in force, and each feature's definition version.
        self.version = version
        self.defined_in = {s.name: (defined_in or {}).get(s.name, 1) for s in self.specs}
        #: Features declared but not answered until their backfill is handed over.
        self.backfilling = frozenset(backfilling)
        # Features defined after version 1: a row's value of one of them counts only if
        # the row says it was computed under that definition.
        self._versioned = {n: v for n, v in self.defined_in.items() if v != 1}
        # Every feature's update in one pass over a user's events, and its read: compiled
        # to C when built (``native=None``), else Python; both give the same answers.
        self._pass = compile_pass(self.specs, native=native)
        # A batch's stored rows in C where built (``_rows``); else the pass's own
        # ``apply_rows``. Both store the same bytes (a property test holds them to it).
        self._rows = compile_row_pass(self._pass, native=native)
        self._readers: dict[str, Reader] = {
            s.name: reader_for(s, native=native) for s in self.specs
        }
        # _time.format_ms's text, printed as the readers print it (compiled when built).
        self._time_text: Callable[[int], str] = implementation(native)[0].time_text
        self._budget_cache: tuple[tuple[tuple[str, float], ...], dict[str, float]] | None = None
        self.late_events = 0
        self.duplicates = 0

    def apply(self, state: dict[str, Any], signals: Iterable[SignalView]) -> int:
        """Apply one user's signals (in bus order) to its state; the number applied.

        An event already applied (its id among the user's recent ids) is skipped; one
        beyond the lateness bound feeds the all-time features only, and is counted.
        """
        if self._versioned:
            self.align(state)
        return self._count(self._pass.apply(state, signals, self.lateness_ms))

    def apply_batch(self, state: dict[str, Any], batch: SignalBatch, start: int, stop: int) -> int:
        """:meth:`apply` to the events ``start`` up to ``stop`` of ``batch`` (one user's)."""
        if self._versioned:
            self.align(state)
        return self._count(self._pass.apply_batch(state, batch, start, stop, self.lateness_ms))

    def apply_rows(
        self, batch: SignalBatch, rows: Mapping[str, bytes], out: dict[str, bytes]
    ) -> int:
        """:meth:`apply_batch` to every user of ``batch``, each from its stored row in
        ``rows`` (absent for a new user), each row's stored form put in ``out``; the
        number applied. One call into the pass for the whole batch."""
        if self._rows is not None and not self._versioned:
            counts = self._rows.apply_rows(
                batch, rows, (self.decode, _encode), self.lateness_ms, out
            )
        else:  # each row aligned to the definitions as it is decoded, where some changed
            decode = self._decode_aligned if self._versioned else self.decode
            counts = self._pass.apply_rows(batch, rows, (decode, _encode), self.lateness_ms, out)
        return self._count(counts)

    def _decode_aligned(self, data: bytes | None) -> dict[str, Any]:
        """:meth:`decode`, then :meth:`align` (the pass's decode of a row when some
        features were redefined)."""
        state = self.decode(data)
        self.align(state)
        return state

    def _count(self, counts: tuple[int, int, int]) -> int:
        applied, duplicates, late = counts
        if duplicates:
            self.duplicates += duplicates
        if late:
            self.late_events += late
        return applied

    def align(self, state: dict[str, Any]) -> None:
        """Drop the values ``state`` holds under another definition of a feature than
        the engine's, and mark the row as holding the engine's: the stream's values of
        a feature redefined without backfill start at the switch, never mixed."""
        marks = state.get(DEFINITIONS)
        for name, version in self._versioned.items():
            if (marks or {}).get(name, 1) != version:
                state.pop(name, None)
                if marks is None:
                    marks = state[DEFINITIONS] = {}
                marks[name] = version

    def holds(self, state: dict[str, Any], name: str) -> bool:
        """True when ``state``'s value of ``name`` was computed under the engine's
        definition of it."""
        version = self.defined_in.get(name, 1)
        return bool((state.get(DEFINITIONS) or {}).get(name, 1) == version)

    def replaced(self, **changes: Any) -> FeatureEngine:
        """An engine like this one with other definitions (same bound, budgets, form)."""
        args: dict[str, Any] = {
            "specs": self.specs,
            "lateness_ms": self.lateness_ms,
            "budgets_s": self.budgets_s,
            "native": self.native,
            "version": self.version,
            "defined_in": self.defined_in,
            "backfilling": tuple(self.backfilling),
        }
        args.update(changes)
        engine = FeatureEngine(**args)
        engine.late_events, engine.duplicates = self.late_events, self.duplicates
        return engine

    @staticmethod
    def earliest(state: dict[str, Any]) -> int | None:
        """Time (ms) of the earliest event the row holds, if it holds any."""
        first = state.get(FIRST)
        return int(first) if first else None

    @staticmethod
    def encode(state: dict[str, Any]) -> bytes:
        """The stored form of a state."""
        return _encode(state)

    @staticmethod
    def decode(data: bytes | None) -> dict[str, Any]:
        """A state from its stored form (empty for a new user)."""
        return _decode(data) if data else {}

    def _budgets(self) -> dict[str, float]:
        # Every feature's budget, recomputed only when the budgets changed (they may be
        # replaced or edited in place: compared by value, one tuple per read).
        key = tuple(self.budgets_s.items())
        cached = self._budget_cache
        if cached is None or cached[0] != key:
            cached = self._budget_cache = (key, {s.name: self.budget_of(s) for s in self.specs})
        return cached[1]

    def budget_of(self, spec: FeatureSpec) -> float:
        """A feature's freshness budget: the strictest budget of the types feeding it."""
        if "*" in spec.event_types:
            relevant = list(self.budgets_s.values())
        else:
            relevant = [self.budgets_s[t] for t in spec.event_types if t in self.budgets_s]
        return min(relevant) if relevant else DEFAULT_FRESHNESS_BUDGET_S

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
        row = state or {}
        waiting = [s.name for s in specs if s.name in self.backfilling]
        values = {
            s.name: self._readers[s.name](
                row.get(s.name) if not self._versioned or self.holds(row, s.name) else None,
                now_ms,
            )
            for s in specs
            if s.name not in self.backfilling
        }
        known = self._budgets()
        budgets = {s.name: known[s.name] for s in specs}
        age = None if as_of_ms is None else max(0.0, (now_ms - as_of_ms) / 1000)
        stale = [n for n, b in budgets.items() if age is None or age > b]
        return UserFeatures(
            user_id=user_id,
            features=values,
            as_of=self._time_text(as_of_ms) if as_of_ms else None,
            age_s=None if age is None else round(age, 3),
            stale=bool(stale),
            stale_features=stale,
            budgets_s=budgets,
            found=bool(state),
            versions={s.name: self.defined_in[s.name] for s in specs},
            backfilling=waiting,
            definitions_version=self.version,
        )

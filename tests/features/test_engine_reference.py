"""Property test: the batched engine leaves exactly the state the per-event engine left,
with the compiled pass (``_native.pyx``) and with the generated Python pass.

Random batches of a few users (busy ones too, so bucket pruning and the set-based
duplicate look-up run), re-sent events, events far behind the watermark, saves that
remove, and feature lists beyond the defaults (several types, typed bucketed kinds).
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from headwater.contract.signal import Signal, encode_signal
from headwater.features.consumer import decode_stream_signal
from headwater.features.engine import FeatureEngine
from headwater.features.fused import NATIVE
from headwater.features.kinds import _iso_python, _read_window_python, iso, reader_for
from headwater.features.spec import DEFAULT_FEATURES, FeatureSpec
from tests.features._reference import ReferenceEngine

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RECENT = FeatureSpec(name="recent", kind="recent_items")
TYPES = ("view", "click", "save", "rating", "purchase", "search")
EXTRA = (
    FeatureSpec(name="typed_windows", kind="window_count", event_types=("view", "click")),
    FeatureSpec(name="shop_surfaces", kind="active_surfaces", event_types=("purchase", "save")),
    FeatureSpec(name="views_and_saves", kind="recent_items", event_types=("view", "save"), size=3),
    FeatureSpec(name="taps", kind="count", event_types=("click",)),
    FeatureSpec(name="last_any", kind="last_event", fields=("rating", "query")),
    FeatureSpec(name="mean_price", kind="mean", event_types=("purchase",), field="price"),
    FeatureSpec(name="last_view_at", kind="last_time", event_types=("view",)),
)


def _payload(etype: str, n: int) -> dict[str, Any]:
    if etype == "save":
        return {"action": "remove" if n % 4 == 0 else "add"}
    if etype == "rating":
        return {"rating": n % 5 + 1}
    if etype == "purchase":
        return {"order_id": f"o{n}", "price": n * 0.5, "currency": "USD", "quantity": 1}
    if etype == "search":
        return {"query": "q"}
    return {}


@st.composite
def streams(draw: st.DrawFn) -> list[list[Signal]]:
    n = draw(st.integers(1, 400))
    users = draw(st.sampled_from([("a",), ("a", "b"), ("a", "b", "c", "d")]))
    spread_s = draw(st.sampled_from([30, 600, 3 * 3600, 4 * 86400, 30 * 86400]))
    sent: list[Signal] = []
    for i in range(n):
        if sent and draw(st.integers(0, 9)) == 0:
            sent.append(sent[draw(st.integers(0, len(sent) - 1))])  # re-sent
            continue
        etype = draw(st.sampled_from(TYPES))
        ago = draw(st.integers(0, spread_s)) + draw(st.integers(0, 999)) / 1000
        sent.append(
            Signal(
                event_id=f"e{i}",
                event_type=etype,
                user_id=draw(st.sampled_from(users)),
                surface=draw(st.sampled_from(["web", "ios", "android"])),
                timestamp=NOW - timedelta(seconds=ago),
                payload=_payload(etype, i),
                item_id=None if etype == "search" else f"i{draw(st.integers(0, 30))}",
            )
        )
    cuts = sorted(draw(st.lists(st.integers(0, len(sent)), max_size=6)))
    bounds = [0, *cuts, len(sent)]
    return [sent[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=streams(),
    lateness_ms=st.sampled_from([60_000, 3_600_000, 10 * 86_400_000]),
    extra=st.booleans(),
    as_consumed=st.booleans(),
    native=st.sampled_from([True, False] if NATIVE else [False]),
)
def test_batched_engine_equals_per_event_engine(
    batches: list[list[Signal]], lateness_ms: int, extra: bool, as_consumed: bool, native: bool
) -> None:
    """``as_consumed``: the engine gets what the consumer decodes (payload still encoded)."""
    specs = DEFAULT_FEATURES + EXTRA if extra else DEFAULT_FEATURES
    engine = FeatureEngine(specs, lateness_ms=lateness_ms, native=native)
    reference = ReferenceEngine(specs, lateness_ms=lateness_ms)
    rows: dict[str, bytes] = {}
    ref_rows: dict[str, bytes] = {}
    for batch in batches:
        by_user: dict[str, list[Signal]] = {}
        for s in batch:
            by_user.setdefault(s.user_id, []).append(s)
        for user, signals in by_user.items():
            state = engine.decode(rows.get(user))
            ref_state = engine.decode(ref_rows.get(user))
            given = [decode_stream_signal(encode_signal(s)) for s in signals]
            applied = engine.apply(state, given if as_consumed else signals)
            assert applied == reference.apply(ref_state, signals)
            assert state == ref_state
            rows[user] = engine.encode(state)
            ref_rows[user] = engine.encode(ref_state)
    assert engine.duplicates == reference.duplicates
    assert engine.late_events == reference.late_events
    assert {u: engine.decode(r) for u, r in rows.items()} == {
        u: engine.decode(r) for u, r in ref_rows.items()
    }


PASSES = [pytest.param(True, id="native"), pytest.param(False, id="python")]


def test_the_compiled_pass_is_built() -> None:
    # Installing headwater compiles it; CI must not fall back to the Python pass unseen.
    if not NATIVE and os.environ.get("CI") != "true":
        pytest.skip("headwater.features._native is not built here")
    assert NATIVE


@pytest.mark.parametrize("native", PASSES)
def test_a_busy_user_prunes_buckets_like_the_per_event_engine(native: bool) -> None:
    # Thousands of one user's events over days in one batch: both bucket maps prune.
    signals = [
        Signal(
            event_id=f"e{i}",
            event_type="view",
            user_id="a",
            surface="web",
            timestamp=NOW - timedelta(seconds=(5000 - i) * 97),
            item_id=f"i{i % 50}",
        )
        for i in range(5000)
    ]
    signals += signals[::7]  # re-sent within the same batch
    engine = _engine(native, lateness_ms=86_400_000)
    reference = ReferenceEngine(lateness_ms=86_400_000)
    state: dict[str, Any] = {}
    ref_state: dict[str, Any] = {}
    assert engine.apply(state, signals) == reference.apply(ref_state, signals) == 5000
    assert state == ref_state
    assert engine.duplicates == reference.duplicates > 0


@pytest.mark.parametrize("native", PASSES)
def test_a_batch_of_only_late_events_leaves_bucketed_features_untouched(native: bool) -> None:
    def view(i: int, ago_s: float) -> Signal:
        return Signal(
            event_id=f"e{i}",
            event_type="view",
            user_id="a",
            surface="ios",
            timestamp=NOW - timedelta(seconds=ago_s),
            item_id=f"i{i}",
        )

    engine = _engine(native, lateness_ms=60_000)
    reference = ReferenceEngine(lateness_ms=60_000)
    state: dict[str, Any] = {"_t": int(NOW.timestamp() * 1000)}  # a watermark, no features yet
    ref_state = dict(state)
    late = [view(1, 3600), view(2, 7200)]
    assert engine.apply(state, late) == reference.apply(ref_state, late) == 2
    assert state == ref_state
    assert "window_counts" not in state
    assert "active_surfaces_24h" not in state


@settings(max_examples=2000, deadline=None)
@given(
    ms=st.one_of(
        st.integers(-(2**32) * 1000, 2**32 * 1000),  # the fast path's range
        st.integers(1_600_000_000_000, 1_900_000_000_000),  # recent times
        st.integers(-62_135_596_800_000, 253_402_300_799_999),  # all of datetime's range
    )
)
def test_iso_prints_what_datetime_prints(ms: int) -> None:
    # ``iso`` is the compiled form where it is built; the Python form is checked too.
    expected = datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    assert iso(ms) == expected
    assert _iso_python(ms) == expected
    assert reader_for(RECENT)([[f"i{ms}"], [ms]], 0) == [{"item_id": f"i{ms}", "at": expected}]


def _engine(native: bool, *, lateness_ms: int) -> FeatureEngine:
    if native and not NATIVE:
        pytest.skip("headwater.features._native is not built here")
    return FeatureEngine(lateness_ms=lateness_ms, native=native)


@settings(max_examples=500, deadline=None)
@given(
    when=st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=-7)), timezone(timedelta(0), "another UTC")]
        ),
    )
    | st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.just(UTC),
    ),
    native=st.sampled_from([True, False] if NATIVE else [False]),
)
def test_event_time_in_ms_is_what_timestamp_gives(when: datetime, native: bool) -> None:
    # The compiled pass computes UTC times from the date's fields; both passes must
    # agree with int(timestamp() * 1000) to the millisecond, over datetime's range.
    engine = FeatureEngine(native=native)
    state: dict[str, Any] = {}
    sig = Signal(
        event_id="e", event_type="search", user_id="a", surface="web", timestamp=when, payload={}
    )
    engine.apply(state, [sig])
    assert state["_first"] == int(when.timestamp() * 1000)


@st.composite
def window_states(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    now = draw(st.integers(0, 2_000_000_000_000))
    state: dict[str, Any] = {}
    for etype in draw(st.lists(st.sampled_from(TYPES), max_size=4, unique=True)):
        minutes = {
            now // 60_000 - draw(st.integers(-3, 130)): draw(st.integers(1, 9))
            for _ in range(draw(st.integers(0, 12)))
        }
        hours = {
            now // 3_600_000 - draw(st.integers(-3, 200)): draw(st.integers(1, 9))
            for _ in range(draw(st.integers(0, 12)))
        }
        state[etype] = [minutes, hours]
    return state, now


@settings(max_examples=500, deadline=None)
@given(
    state_now=window_states(),
    windows=st.lists(
        st.sampled_from([60.0, 900.5, 3600.0, 3600.0004, 7200.0, 86_400.0, 604_800.0]),
        min_size=1,
        max_size=5,
    ),
)
def test_window_reads_are_the_same_compiled_and_in_python(
    state_now: tuple[dict[str, Any], int], windows: list[float]
) -> None:
    state, now = state_now
    spec = FeatureSpec(name="w", kind="window_count", windows_s=tuple(windows))
    expected = _read_window_python(spec)(state, now)
    assert reader_for(spec)(state, now) == expected
    assert reader_for(spec)(None, now) == _read_window_python(spec)(None, now)

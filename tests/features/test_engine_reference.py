"""Property tests: both forms of the feature kinds, compiled (``_kinds.py`` built with
Cython) and pure Python (the same module run as written), leave exactly the state the
per-event reference engine leaves and read exactly what it reads.

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

from headwater._time import format_ms
from headwater.bus.base import Record
from headwater.contract.signal import Signal, encode_signal
from headwater.features import _kinds, _pass
from headwater.features.engine import FeatureEngine
from headwater.features.kinds import NATIVE, compiled, implementation, reader_for
from headwater.features.signals import COMPILED, decode_batch, decode_stream_signal
from headwater.features.spec import DEFAULT_FEATURES, KINDS, FeatureSpec
from tests.features._reference import ReferenceEngine, read, read_all, text

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RECENT = FeatureSpec(name="recent", kind="recent_items")
TYPES = ("view", "click", "save", "rating", "purchase", "search")
EXTRA = (
    FeatureSpec(
        name="typed_windows",
        kind="window_count",
        event_types=("view", "click"),
        windows_s=(900.5, 7200.0, 2 * 86_400.0),
    ),
    FeatureSpec(
        name="shop_surfaces",
        kind="active_surfaces",
        event_types=("purchase", "save"),
        window_s=3600.0,
    ),
    FeatureSpec(name="views_and_saves", kind="recent_items", event_types=("view", "save"), size=3),
    FeatureSpec(name="taps", kind="count", event_types=("click",)),
    FeatureSpec(name="last_any", kind="last_event", fields=("rating", "query")),
    FeatureSpec(name="mean_price", kind="mean", event_types=("purchase",), field="price"),
    FeatureSpec(name="last_view_at", kind="last_time", event_types=("view",)),
)


def bucket_map(buckets: list[int]) -> dict[int, int]:
    """``{key: n}`` of a bucketed count's flat list (``_kinds.bump``): the newest key,
    then each older key a gap below the one before."""
    out: dict[int, int] = {}
    key = 0
    for i in range(0, len(buckets), 2):
        key = buckets[0] if i == 0 else key - buckets[i]
        out[key] = buckets[i + 1]
    return out


def as_maps(specs: tuple[FeatureSpec, ...], state: dict[str, Any]) -> dict[str, Any]:
    """The engine's state with each bucketed count's flat lists as the reference's
    ``{key: n}`` maps."""
    out = dict(state)
    for spec in specs:
        if spec.kind == "window_count" and spec.name in out:
            out[spec.name] = {
                etype: [bucket_map(minutes), bucket_map(hours)]
                for etype, (minutes, hours) in out[spec.name].items()
            }
    return out


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
    given_as=st.sampled_from(
        ["signals", "decoded", "columns", "columns read by msgspec", "rows of the batch"]
    ),
    native=st.sampled_from([True, False] if NATIVE else [False]),
)
def test_batched_engine_equals_per_event_engine(
    batches: list[list[Signal]], lateness_ms: int, extra: bool, given_as: str, native: bool
) -> None:
    """``given_as``: the engine gets ``Signal`` objects, signals as the bus's bytes decode
    (payload still encoded), or the consumer's columns of the batch (``signals``), read
    by the compiled reader where it is built or by msgspec, one user at a time or the
    whole batch from its users' stored rows in one call (``apply_rows``)."""
    specs = DEFAULT_FEATURES + EXTRA if extra else DEFAULT_FEATURES
    engine = FeatureEngine(specs, lateness_ms=lateness_ms, native=native)
    reference = ReferenceEngine(specs, lateness_ms=lateness_ms)
    rows: dict[str, bytes] = {}
    ref_rows: dict[str, bytes] = {}
    for batch in batches:
        by_user: dict[str, list[Signal]] = {}
        for s in batch:
            by_user.setdefault(s.user_id, []).append(s)
        records = [
            Record(0, n, s.user_id, "signal", encode_signal(s), 0) for n, s in enumerate(batch)
        ]
        columns = decode_batch(
            records, {}, compiled=given_as in ("columns", "rows of the batch") and COMPILED
        )
        assert columns.users == list(by_user)
        if given_as == "rows of the batch":
            out: dict[str, bytes] = {}
            applied = engine.apply_rows(columns, rows, out)
            assert list(out) == list(by_user)
            expected = 0
            for user, signals in by_user.items():
                ref_state = engine.decode(ref_rows.get(user))
                expected += reference.apply(ref_state, signals)
                ref_rows[user] = engine.encode(ref_state)
                assert as_maps(specs, engine.decode(out[user])) == ref_state
            assert applied == expected
            rows.update(out)
            continue
        for k, (user, signals) in enumerate(by_user.items()):
            state = engine.decode(rows.get(user))
            ref_state = engine.decode(ref_rows.get(user))
            if given_as == "signals":
                applied = engine.apply(state, signals)
            elif given_as == "decoded":
                applied = engine.apply(
                    state, [decode_stream_signal(encode_signal(s)) for s in signals]
                )
            else:
                applied = engine.apply_batch(
                    state, columns, columns.starts[k], columns.starts[k + 1]
                )
            assert applied == reference.apply(ref_state, signals)
            assert as_maps(specs, state) == ref_state
            rows[user] = engine.encode(state)
            ref_rows[user] = engine.encode(ref_state)
    assert engine.duplicates == reference.duplicates
    assert engine.late_events == reference.late_events
    assert {u: as_maps(specs, engine.decode(r)) for u, r in rows.items()} == {
        u: engine.decode(r) for u, r in ref_rows.items()
    }
    now_ms = int(NOW.timestamp() * 1000)
    for user, row in rows.items():
        for now in (now_ms, now_ms + 2 * 3_600_000):  # and later: windows roll on
            answer = engine.read(user, engine.decode(row), now_ms=now, as_of_ms=now)
            assert answer.features == read_all(specs, engine.decode(ref_rows[user]), now)


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
    assert as_maps(DEFAULT_FEATURES, state) == ref_state
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
    assert as_maps(DEFAULT_FEATURES, state) == ref_state
    assert "window_counts" not in state
    assert "active_surfaces_24h" not in state


@settings(max_examples=2000, deadline=None)
@given(
    ms=st.one_of(
        st.integers(1_600_000_000_000, 1_900_000_000_000),  # recent times
        st.integers(-(2**32) * 1000, 2**32 * 1000),
        # Years 1000 to 9999: _time.format_ms cannot print earlier years where strftime
        # does not pad %Y (glibc); ingestion refuses such times long before that.
        st.integers(-30_610_224_000_000, 253_402_300_799_999),
    ),
    native=st.sampled_from([True, False] if NATIVE else [False]),
)
def test_times_read_in_one_fixed_width_format(ms: int, native: bool) -> None:
    # Every time a read prints is _time.format_ms's text: milliseconds always, and Z.
    at = text(ms)
    assert format_ms(ms) == at
    assert len(at) == 24
    assert implementation(native)[0].time_text(ms) == at  # the readers' printer
    recent = [[f"i{ms}"], [ms]]
    assert reader_for(RECENT, native=native)(recent, 0) == [{"item_id": f"i{ms}", "at": at}]
    last = FeatureSpec(name="last", kind="last_event", fields=("price",))
    assert reader_for(last, native=native)([ms, "i", {"price": 1}], 0)["at"] == at
    if ms:
        last_time = FeatureSpec(name="t", kind="last_time")
        assert reader_for(last_time, native=native)(ms, 0) == at
        answer = FeatureEngine(native=native).read("u", {}, now_ms=ms, as_of_ms=ms)
        assert answer.as_of == at


def test_times_sort_as_text() -> None:
    times = [0, 1, 999, 1000, 60_000, 1_764_547_200_000, 1_764_547_200_157]
    assert sorted(times, key=format_ms) == times
    assert format_ms(1_764_547_200_000) == "2025-12-01T00:00:00.000Z"


def test_both_forms_are_what_they_say() -> None:
    # The Python form runs the sources as written, even where the compiled one is built.
    kinds, passes = implementation(False)
    assert not compiled(kinds)
    assert not compiled(passes)
    assert not passes.COMPILED
    assert passes._kinds is kinds  # the Python pass calls the Python kinds
    if NATIVE:
        assert implementation(True) == (_kinds, _pass)
        assert compiled(_kinds)
        assert compiled(_pass)
        assert _pass.COMPILED


def test_every_declared_kind_is_defined() -> None:
    assert set(_kinds.KINDS) == set(KINDS)


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
    native=st.sampled_from([True, False] if NATIVE else [False]),
)
def test_window_reads_are_the_reference_reads(
    state_now: tuple[dict[str, Any], int], windows: list[float], native: bool
) -> None:
    state, now = state_now
    spec = FeatureSpec(name="w", kind="window_count", windows_s=tuple(windows))
    reader = reader_for(spec, native=native)
    assert reader(state, now) == read(spec, state, now)  # a row written with bucket maps
    kinds = implementation(native)[0]
    lists = {t: [kinds.bucket_list(m), kinds.bucket_list(h)] for t, (m, h) in state.items()}
    assert reader(lists, now) == read(spec, state, now)
    assert reader(None, now) == read(spec, None, now)


@settings(max_examples=1000, deadline=None)
@given(
    steps=st.lists(st.integers(-40, 3), min_size=1, max_size=400),
    kept=st.sampled_from([1, 2, 5, 61]),
    native=st.sampled_from([True, False] if NATIVE else [False]),
)
def test_bucket_lists_count_and_prune_as_maps(steps: list[int], kept: int, native: bool) -> None:
    # Keys mostly moving forward, some repeated and some far behind (late events within
    # the bound): the flat list counts and prunes exactly as a {key: n} map does.
    kinds = implementation(native)[0]
    buckets: list[int] = []
    expected: dict[int, int] = {}
    key = 29_000_000
    for step in steps:
        key += max(step, 0)
        at = key + min(step, 0)
        kinds.bump(buckets, at, kept)
        expected[at] = expected.get(at, 0) + 1
        if len(expected) > 2 * kept:
            newest = max(expected)
            expected = {k: n for k, n in expected.items() if k > newest - kept}
        assert bucket_map(buckets) == expected
        gaps = buckets[2::2]
        assert all(gap > 0 for gap in gaps)  # newest first, no key twice
        assert kinds.bucket_list(expected) == buckets


@pytest.mark.parametrize("native", PASSES)
def test_a_row_with_bucket_maps_reads_and_counts_on(native: bool) -> None:
    # A row stored before the flat lists: its maps read as before and become lists, with
    # their counts, at the next event of their type.
    engine = _engine(native, lateness_ms=3_600_000)
    now_ms = int(NOW.timestamp() * 1000)
    minute, hour = now_ms // 60_000, now_ms // 3_600_000
    row = {"window_counts": {"view": [{minute: 2, minute - 5: 1}, {hour: 3, hour - 30: 4}]}}
    before = engine.read("a", row, now_ms=now_ms, as_of_ms=now_ms).features["window_counts"]
    assert before == {"1h": {"view": 3}, "24h": {"view": 3}, "7d": {"view": 7}}
    view = Signal(
        event_id="e1", event_type="view", user_id="a", surface="web", timestamp=NOW, item_id="i"
    )
    engine.apply(row, [view])
    minutes, hours = row["window_counts"]["view"]
    assert minutes == [minute, 3, 5, 1]
    assert hours == [hour, 4, 30, 4]
    after = engine.read("a", row, now_ms=now_ms, as_of_ms=now_ms).features["window_counts"]
    assert after == {"1h": {"view": 4}, "24h": {"view": 4}, "7d": {"view": 8}}

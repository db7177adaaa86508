"""The pass over a batch's stored rows in C (``_rows``) against ``_pass``'s
``apply_rows``: the same counts and the same stored bytes, batch after batch, whatever
the rows and events (those it leaves to ``_pass`` included)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

from headwater.bus.base import Record
from headwater.contract.signal import Signal, encode_signal
from headwater.features.engine import FeatureEngine
from headwater.features.kinds import NATIVE, implementation
from headwater.features.signals import decode_batch
from headwater.features.spec import DEFAULT_FEATURES, FeatureSpec

try:
    from headwater.features import _rows
except ImportError:  # not built here
    _rows = None  # type: ignore[assignment]

pytestmark = pytest.mark.skipif(
    _rows is None or not NATIVE, reason="headwater.features._rows is not built here"
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TYPES = ("view", "click", "save", "rating", "purchase", "search", "share")
EXTRA = (
    FeatureSpec(name="taps", kind="count", event_types=("click",)),
    FeatureSpec(name="last_any", kind="last_event", fields=("rating", "query", "é")),
    FeatureSpec(name="mean_price", kind="mean", event_types=("purchase",), field="price"),
    FeatureSpec(name="last_view_at", kind="last_time", event_types=("view",)),
    FeatureSpec(
        name="kept",
        kind="recent_items",
        event_types=("save", "share"),
        size=2,
        remove_when={"action": "remove", "n": 3},
    ),
    FeatureSpec(
        name="short_windows",
        kind="window_count",
        event_types=("view", "share"),
        windows_s=(60.0, 7200.0),
    ),
)
#: Payload values a kind reads, of every type a producer may send (ints beyond 63 bits
#: and booleans among them).
NUMBERS = st.one_of(
    st.integers(-5, 5),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([2**63, 2**64 - 1, -(2**63), 2**62 + 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
TEXT = st.sampled_from(["i1", "i2", "i3", "é", "商品", "x" * 40, "y" * 300, ""])


@st.composite
def payloads(draw: st.DrawFn, etype: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if etype == "save" or etype == "share":
        out["action"] = draw(st.sampled_from(["add", "remove", None]))
        if draw(st.booleans()):
            out["n"] = draw(st.sampled_from([3, 3.0, True, "3"]))
    if etype == "rating" or draw(st.integers(0, 5)) == 0:
        out["rating"] = draw(NUMBERS)
    if etype == "purchase":
        out["price"] = draw(NUMBERS)
    if draw(st.integers(0, 4)) == 0:
        out[draw(st.sampled_from(["query", "é", "other"]))] = draw(
            st.one_of(TEXT, NUMBERS, st.lists(st.integers(-9, 9), max_size=2))
        )
    return out


@st.composite
def streams(draw: st.DrawFn) -> list[list[Signal]]:
    n = draw(st.integers(1, 300))
    users = draw(st.sampled_from([("a",), ("a", "b"), ("a", "b", "c", "üser")]))
    spread_s = draw(st.sampled_from([30, 3 * 3600, 9 * 86400, 60 * 86400]))
    sent: list[Signal] = []
    for i in range(n):
        if sent and draw(st.integers(0, 6)) == 0:
            sent.append(sent[draw(st.integers(0, len(sent) - 1))])  # re-sent
            continue
        etype = draw(st.sampled_from(TYPES))
        ago = draw(st.integers(-60, spread_s)) + draw(st.integers(0, 999)) / 1000
        if draw(st.integers(0, 2)) == 0:
            ago = draw(st.sampled_from([0, 1, 2.5]))  # events of the same time
        if draw(st.integers(0, 30)) == 0:
            ago = (NOW - datetime(1969, 12, 31, 23, 59, tzinfo=UTC)).total_seconds()
        sent.append(
            Signal(
                event_id=draw(st.sampled_from([f"e{i}", f"é{i}", f"{i:026d}"])),
                event_type=etype,
                user_id=draw(st.sampled_from(users)),
                surface=draw(st.sampled_from(["web", "ios", "андроид"])),
                timestamp=NOW - timedelta(seconds=ago),
                payload=draw(payloads(etype)),
                item_id=None if draw(st.integers(0, 8)) == 0 else draw(TEXT),
            )
        )
    cuts = sorted(draw(st.lists(st.integers(0, len(sent)), max_size=5)))
    bounds = [0, *cuts, len(sent)]
    return [sent[a:b] for a, b in itertools.pairwise(bounds)]


def _old_row(specs: tuple[FeatureSpec, ...]) -> dict[str, Any]:
    """A row as a release before the bucket lists wrote it (bucket maps), with keys no
    declared feature has."""
    minute = int(NOW.timestamp()) // 60
    row: dict[str, Any] = {
        "_ids": ["old-1", "old-2"],
        "_v": {"something": 2},
        "gone_feature": [1, "x", {"k": None}],
        "_t": int(NOW.timestamp() * 1000) - 5_000,
        "_first": int(NOW.timestamp() * 1000) - 90_000_000,
    }
    for spec in specs:
        if spec.kind == "window_count":
            row[spec.name] = {"view": [{minute: 2, minute - 3: 1}, {minute // 60: 3}]}
    return row


def _outcome(apply_rows: Any, *args: Any) -> tuple[int, int, int] | str:
    """What ``apply_rows`` returns, or the error it raises, as text."""
    try:
        counts: tuple[int, int, int] = apply_rows(*args)
    except (TypeError, ValueError, OverflowError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return counts


def _records_of(signals: list[Signal]) -> list[Record]:
    """The bus records of ``signals``, in order."""
    return [Record(0, n, s.user_id, "signal", encode_signal(s), 0) for n, s in enumerate(signals)]


def _views(users: list[str], at: datetime = NOW) -> list[Record]:
    """The bus records of one view by each of ``users`` in turn (event ``e<i>`` of item
    ``i<i>``), all at ``at``."""
    return _records_of(
        [
            Signal(
                event_id=f"e{i}",
                event_type="view",
                user_id=user,
                surface="web",
                timestamp=at,
                payload={},
                item_id=f"i{i}",
            )
            for i, user in enumerate(users)
        ]
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=streams(),
    lateness_ms=st.sampled_from([1_000, 3_600_000, 10 * 86_400_000]),
    extra=st.booleans(),
    old_rows=st.booleans(),
)
def test_the_c_row_pass_stores_what_the_python_pass_stores(
    batches: list[list[Signal]], lateness_ms: int, extra: bool, old_rows: bool
) -> None:
    specs = DEFAULT_FEATURES + EXTRA if extra else DEFAULT_FEATURES
    engine = FeatureEngine(specs, lateness_ms=lateness_ms)
    assert type(engine._rows).__name__ == "RowPass"
    python_pass = engine._pass
    codec = (engine.decode, engine.encode)
    rows_c: dict[str, bytes] = {}
    if old_rows:
        rows_c = {u: engine.encode(_old_row(specs)) for u in ("a", "üser")}
    rows_py = dict(rows_c)
    for batch in batches:
        columns = decode_batch(_records_of(batch), {})
        out_c: dict[str, bytes] = {}
        out_py: dict[str, bytes] = {}
        counts_c = _outcome(engine._rows.apply_rows, columns, rows_c, codec, lateness_ms, out_c)
        counts_py = _outcome(python_pass.apply_rows, columns, rows_py, codec, lateness_ms, out_py)
        assert counts_c == counts_py
        if isinstance(counts_py, str):
            return  # both refused the batch (a sum beyond what MessagePack holds), alike
        assert list(out_c) == list(out_py)
        for user, stored in out_py.items():
            assert engine.decode(out_c[user]) == engine.decode(stored)
            assert out_c[user] == stored
        rows_c.update(out_c)
        rows_py.update(out_py)


def test_a_busy_user_with_resent_events_is_counted_once() -> None:
    """More recent ids than the pass scans one by one (``SCAN_IDS``), each event sent
    twice within and across batches: the duplicates found through the id hashes."""
    engine = FeatureEngine()
    sent = [
        Signal(
            event_id=f"e{i}",
            event_type="view",
            user_id="u",
            surface="web",
            timestamp=NOW - timedelta(seconds=1000 - i % 7),
            payload={},
            item_id=f"i{i % 9}",
        )
        for i in range(120)
    ]
    batches = [sent[:80] + sent[40:60], sent[70:120] + sent[100:110]]
    rows_c: dict[str, bytes] = {}
    rows_py: dict[str, bytes] = {}
    totals = [0, 0, 0]
    for batch in batches:
        columns = decode_batch(_records_of(batch), {})
        out_c: dict[str, bytes] = {}
        out_py: dict[str, bytes] = {}
        counts = engine._rows.apply_rows(
            columns, rows_c, (engine.decode, engine.encode), 3_600_000, out_c
        )
        assert counts == engine._pass.apply_rows(
            columns, rows_py, (engine.decode, engine.encode), 3_600_000, out_py
        )
        assert out_c == out_py
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
        rows_c.update(out_c)
        rows_py.update(out_py)
    assert totals[0] == 120
    assert engine.decode(rows_c["u"])["counts"] == {"view": 120}


def test_the_consumer_engine_uses_the_c_row_pass_and_the_python_form_does_not() -> None:
    assert type(FeatureEngine()._rows).__name__ == "RowPass"
    assert FeatureEngine(native=False)._rows is None


def test_the_row_pass_keeps_the_python_pass_bounds() -> None:
    python_pass = implementation(False)[1]
    assert (_rows.RECENT_IDS, _rows.SCAN_IDS) == (python_pass.RECENT_IDS, python_pass.SCAN_IDS)
    assert (_rows.IDS, _rows.WATERMARK, _rows.FIRST, _rows.LATE) == (
        python_pass.IDS,
        python_pass.WATERMARK,
        python_pass.FIRST,
        python_pass.LATE,
    )


def test_a_row_of_another_shape_is_left_to_the_python_pass() -> None:
    """A value the kinds never write (text counts) goes to ``_pass``, which answers
    as it always has: here, with its own error."""
    engine = FeatureEngine()
    columns = decode_batch(_views(["u"]), {})
    row = msgspec.msgpack.encode({"counts": {"view": "many"}})
    with pytest.raises(TypeError):
        engine.apply_rows(columns, {"u": row}, {})


#: Where MessagePack's integer forms change (msgspec takes the shortest).
EDGES = [
    n + d
    for n in (0, 127, 255, 65_535, 2**32 - 1, -32, -128, -32_768, -(2**31))
    for d in (-1, 0, 1)
]


@pytest.mark.parametrize("edge", EDGES)
def test_integers_at_each_edge_of_their_forms_are_stored_as_msgspec_stores_them(
    edge: int,
) -> None:
    """A count one below ``edge`` counted up to it, and an event at ``edge`` ms since
    the epoch (its time, the row's earliest and the surface's latest)."""
    engine = FeatureEngine()
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=edge)
    columns = decode_batch(_views(["u"], at), {})
    rows = {"u": msgspec.msgpack.encode({"counts": {"view": max(edge - 1, 0)}})}
    codec = (engine.decode, engine.encode)
    out_c: dict[str, bytes] = {}
    out_py: dict[str, bytes] = {}
    engine._rows.apply_rows(columns, rows, codec, 3_600_000, out_c)
    engine._pass.apply_rows(columns, rows, codec, 3_600_000, out_py)
    assert out_c == out_py


def test_the_row_pass_reads_the_batch_as_the_reader_left_it() -> None:
    """No column of Python objects is made for a batch the C pass takes whole; a user it
    leaves to ``_pass`` has them made, and the users after it are read as before."""
    engine = FeatureEngine()
    records = _views(["u1", "u2", "u3", "u1"])
    batch = decode_batch(records, {})
    assert batch.raw is not None
    assert len(batch) == 4
    out: dict[str, bytes] = {}
    assert engine.apply_rows(batch, {}, out) == 4
    assert batch.raw is not None  # never made

    python_engine = FeatureEngine(native=False)
    expected: dict[str, bytes] = {}
    python_engine.apply_rows(decode_batch(records, {}, compiled=False), {}, expected)
    assert out == expected

    old = {"u2": msgspec.msgpack.encode({"window_counts": {"view": [{1: 1}, {1: 1}]}})}
    batch = decode_batch(records, {})
    out = {}
    assert engine.apply_rows(batch, old, out) == 4
    assert batch.raw is None  # made for u2
    expected = {}
    python_engine.apply_rows(decode_batch(records, {}, compiled=False), old, expected)
    assert out == expected


def test_a_pass_entered_again_while_it_applies_a_batch_leaves_the_second_to_pass() -> None:
    """The row pass keeps one batch's scratch: a call made while it runs (another thread,
    or here a row decode that applies a batch itself) goes to ``_pass`` and both answer
    as ``_pass`` does."""
    engine = FeatureEngine()
    records = _views(["u1", "u2", "u1"])
    old = {"u1": msgspec.msgpack.encode({"window_counts": {"view": [{1: 1}, {1: 1}]}})}
    inner: dict[str, bytes] = {}
    entered: list[bool] = []

    def decode(data: bytes | None) -> dict[str, Any]:
        if not entered:  # the user left to _pass: apply another batch from here
            entered.append(True)
            engine._rows.apply_rows(decode_batch(records, {}), {}, codec, 3_600_000, inner)
        return engine.decode(data)

    codec = (decode, engine.encode)
    out: dict[str, bytes] = {}
    engine._rows.apply_rows(decode_batch(records, {}), old, codec, 3_600_000, out)
    expected: dict[str, bytes] = {}
    plain = (engine.decode, engine.encode)
    engine._pass.apply_rows(decode_batch(records, {}), old, plain, 3_600_000, expected)
    assert out == expected
    fresh: dict[str, bytes] = {}
    engine._pass.apply_rows(decode_batch(records, {}), {}, plain, 3_600_000, fresh)
    assert inner == fresh

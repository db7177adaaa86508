"""Point-in-time training sets (``features history``): the same pass as the stream, nothing
from after a label's time, erased users left out, batch rows of the last completed run."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.archive.schema import signals_to_arrow
from headwater.archive.table import ArchiveTable
from headwater.bus.base import KIND_SIGNAL, Record
from headwater.contract.signal import Signal, encode_signal
from headwater.erasure.tombstones import TombstoneFilter
from headwater.errors import ConfigurationError
from headwater.features.consumer import USER_NAMESPACE, FeatureConsumer
from headwater.features.engine import FeatureEngine
from headwater.features.history import TrainingSetBuilder
from headwater.features.spec import DEFAULT_FEATURES
from headwater.online import open_online_store
from tests.archive._history import SUBJECT

BASE = datetime(2026, 3, 1, tzinfo=UTC)
NAMES = [s.name for s in DEFAULT_FEATURES]
TYPES = ("view", "click", "save", "purchase", "rating", "search")


def sig(
    n: int,
    user: str,
    etype: str,
    at: timedelta,
    *,
    received: timedelta | None = None,
    item: str | None = None,
    payload: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> Signal:
    return Signal(
        event_id=event_id or f"e{n}",
        event_type=etype,
        user_id=user,
        surface=("home", "search", "pdp")[n % 3],
        timestamp=BASE + at,
        item_id=item if item is not None else f"i{n % 7}",
        payload=payload or _payload(etype, n),
        received_at=BASE + (received if received is not None else at),
    )


def _payload(etype: str, n: int) -> dict[str, Any]:
    if etype == "rating":
        return {"rating": 1 + n % 5}
    if etype == "purchase":
        return {"order_id": f"o{n}", "price": 2.5 + n, "currency": "EUR", "quantity": 1 + n % 2}
    if etype == "save":
        return {"action": "remove"} if n % 4 == 0 else {"action": "add"}
    return {}


def archive_of(root: Path, batches: Sequence[Sequence[Signal]]) -> ArchiveTable:
    """An archive holding ``batches``, each appended as its own commit (its own files)."""
    table = ArchiveTable(str(root))
    for batch in batches:
        if batch:
            table.append(signals_to_arrow(batch, SUBJECT))
    return table


def labels_of(rows: Sequence[tuple[str, timedelta]], **extra: list[Any]) -> pa.Table:
    return pa.table(
        {
            "user_id": [u for u, _ in rows],
            "timestamp": pa.array([BASE + t for _, t in rows], pa.timestamp("us", tz="UTC")),
            **extra,
        }
    )


def features_by_label(table: pa.Table) -> list[dict[str, Any]]:
    return [{n: json.loads(r[n]) for n in NAMES} for r in table.to_pylist()]


def output_order(moments: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Labels as the training set orders them: by user, then time, then position."""
    return [moments[i] for i in sorted(range(len(moments)), key=lambda i: (*moments[i], i))]


def stream_answer(
    tmp: Path, signals: Sequence[Signal], user: str, at: datetime, engine: FeatureEngine
) -> dict[str, Any]:
    """What the online store answers for ``user`` at ``at`` after the streaming consumer
    consumed ``signals`` in the order given (the bus order), in batches of three."""
    store = open_online_store(f"sqlite:///{tmp / f'online-{random.getrandbits(40)}.db'}")
    try:
        consumer = FeatureConsumer(store, engine, record_freshness=False)
        records = [
            Record(0, i, s.user_id, KIND_SIGNAL, encode_signal(s), 0) for i, s in enumerate(signals)
        ]
        for start in range(0, len(records), 3):
            consumer.handle(records[start : start + 3])
        state = engine.decode(store.get(USER_NAMESPACE, [user]).get(user))
        now = int(at.timestamp() * 1000)
        answer = engine.read(user, state, now_ms=now, as_of_ms=now)
        return json.loads(msgspec.json.encode(answer.features))
    finally:
        store.close()


def test_each_value_equals_what_the_streaming_consumer_holds_at_that_time(
    tmp_path: Path,
) -> None:
    h = timedelta(hours=1)
    m = timedelta(minutes=1)
    signals = [
        sig(1, "u1", "view", 0 * h),
        sig(2, "u1", "save", 10 * m),
        sig(3, "u1", "rating", 20 * m),
        sig(4, "u1", "purchase", 3 * h),
        # Late: arrives after the purchase, timestamped 2 h 30 before it (bound 1 h).
        sig(5, "u1", "click", 30 * m, received=3 * h + 5 * m),
        # Re-published: the same event id again; the pass skips it as the stream does.
        sig(6, "u1", "view", 2 * h, received=3 * h + 6 * m, event_id="e1"),
        sig(8, "u1", "save", 4 * h),
        # Timestamped ahead of its receipt: the stream applied it before e10.
        sig(9, "u1", "view", 6 * h, received=4 * h + 10 * m),
        sig(10, "u1", "click", 5 * h),
        sig(11, "u1", "rating", 7 * h),
        sig(12, "u2", "view", 30 * m),
        sig(13, "u2", "purchase", 26 * h),
    ]
    table = archive_of(tmp_path / "archive", [signals[::2], signals[1::2]])
    engine = FeatureEngine(lateness_ms=3_600_000)
    moments = [
        ("u1", 15 * m),
        ("u1", 3 * h),  # exactly the purchase's time: included
        ("u1", 3 * h + 30 * m),
        ("u1", 4 * h + 30 * m),
        ("u1", 5 * h + 30 * m),
        ("u1", 6 * h + 30 * m),  # e9 was received before e10: the user is replayed
        ("u1", 30 * h),
        ("u2", 25 * h),
        ("u2", 27 * h),
        ("nobody", 2 * h),
    ]
    builder = TrainingSetBuilder(table, engine, None)
    got = builder.table(labels_of(moments))
    bus_order = sorted(signals, key=lambda s: (s.received_at, s.timestamp, s.event_id))
    ordered = output_order(moments)
    assert got.column("user_id").to_pylist() == [u for u, _ in ordered]
    for (user, at), row in zip(ordered, features_by_label(got), strict=True):
        known = [s for s in bus_order if s.user_id == user and s.timestamp <= BASE + at]
        assert row == stream_answer(tmp_path, known, user, BASE + at, engine), (user, at)
    assert got.column("as_of").to_pylist() == [BASE + at for _, at in ordered]
    report = builder.write(labels_of(moments), tmp_path / "out.parquet")
    assert report.replays >= 1
    assert report.rows == len(moments)
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == got.to_pylist()


signal_specs = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(TYPES),
        st.integers(0, 48 * 60),  # event time, minutes after BASE
        st.integers(-10, 180),  # receive delay, minutes (some late, some early)
    ),
    max_size=30,
)
later_specs = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(TYPES),
        st.integers(0, 6 * 3600 * 10**6),  # µs after the cut, plus one
        st.integers(-48 * 60, 48 * 60),  # received at, minutes after BASE
    ),
    max_size=20,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    specs=signal_specs,
    label_minutes=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 48 * 60)),
        min_size=1,
        max_size=8,
    ),
    cut_at=st.integers(0, 7),
    later_specs=later_specs,
    seed=st.integers(0, 2**32 - 1),
)
def test_shuffling_the_archive_or_adding_later_events_never_changes_an_answer(
    tmp_path_factory: pytest.TempPathFactory,
    specs: list[tuple[str, str, int, int]],
    label_minutes: list[tuple[str, int]],
    cut_at: int,
    later_specs: list[tuple[str, str, int, int]],
    seed: int,
) -> None:
    m = timedelta(minutes=1)
    us = timedelta(microseconds=1)
    signals = [
        sig(n, user, etype, at * m, received=(at + delay) * m)
        for n, (user, etype, at, delay) in enumerate(specs)
    ]
    labels = labels_of([(u, t * m) for u, t in label_minutes])
    engine = FeatureEngine()
    tmp = tmp_path_factory.mktemp("history")
    first = TrainingSetBuilder(archive_of(tmp / "one", [signals]), engine, None).table(labels)

    # The same signals in another order, over several commits, plus signals timestamped
    # after one of the labels (``cut``), received at any time, even before the others.
    cut = label_minutes[cut_at % len(label_minutes)][1] * m
    rng = random.Random(seed)
    later = [
        sig(1000 + n, user, etype, cut + (1 + after) * us, received=received * m)
        for n, (user, etype, after, received) in enumerate(later_specs)
    ]
    mixed = signals + later
    rng.shuffle(mixed)
    parts = [mixed[i::3] for i in range(3)]
    second = TrainingSetBuilder(archive_of(tmp / "two", parts), engine, None).table(labels)

    times = first.column("timestamp").to_pylist()
    assert second.column("timestamp").to_pylist() == times
    for at, a, b in zip(times, features_by_label(first), features_by_label(second), strict=True):
        if at <= BASE + cut:
            assert a == b, at
    if not later:
        assert first.equals(second)


def test_an_erased_user_appears_in_no_training_set(tmp_path: Path) -> None:
    h = timedelta(hours=1)
    signals = [sig(n, u, "view", n * h) for n, u in enumerate(["gone", "kept", "gone", "kept"])]
    table = archive_of(tmp_path / "archive", [signals])
    tombstones = TombstoneFilter(None, SUBJECT)
    tombstones.add("gone", int((BASE + 10 * h).timestamp() * 1000))
    labels = labels_of(
        [("gone", 1 * h), ("kept", 2 * h), ("gone", 20 * h), ("kept", 20 * h)],
        label=[1, 0, 1, 0],
    )
    builder = TrainingSetBuilder(table, FeatureEngine(), tombstones)
    got = builder.table(labels)
    assert got.column("user_id").to_pylist() == ["kept", "kept"]
    assert got.column("label").to_pylist() == [0, 0]
    report = builder.write(labels, tmp_path / "out.parquet")
    assert (report.erased_users, report.erased_labels, report.rows) == (1, 2, 2)
    written = pq.read_table(tmp_path / "out.parquet")
    assert "gone" not in written.column("user_id").to_pylist()
    assert b"gone" not in (tmp_path / "out.parquet").read_bytes()


def test_label_columns_and_order_are_kept_from_every_kind_of_input(tmp_path: Path) -> None:
    h = timedelta(hours=1)
    table = archive_of(tmp_path / "archive", [[sig(1, "u", "view", h), sig(2, "v", "click", h)]])
    builder = TrainingSetBuilder(table, FeatureEngine(), None)
    labels = labels_of(
        [("v", 2 * h), ("u", 2 * h), ("u", 0 * h)],
        item_id=["i1", "i2", "i3"],
        clicked=[True, False, True],
    )
    expected = builder.table(labels)
    # Sorted by user, then time: u at 00:00, u at 02:00, v at 02:00.
    assert expected.column("item_id").to_pylist() == ["i3", "i2", "i1"]
    assert expected.column("clicked").to_pylist() == [True, False, True]
    assert [json.loads(c) for c in expected.column("counts").to_pylist()] == [
        {},
        {"view": 1},
        {"click": 1},
    ]
    pq.write_table(labels, tmp_path / "labels.parquet")
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "user_id,timestamp,item_id,clicked\n"
        "v,2026-03-01T02:00:00Z,i1,true\nu,2026-03-01T03:00:00+01:00,i2,false\n"
        "u,2026-03-01 00:00:00,i3,true\n"
    )
    sources: list[Any] = [
        tmp_path / "labels.parquet",
        str(csv),
        pa.RecordBatchReader.from_batches(labels.schema, labels.to_batches()),
    ]
    # pandas and Polars are not dependencies of headwater (the dev extra installs both).
    import pandas as pd
    import polars as pl

    sources.append(labels.to_pandas())
    sources.append(pl.from_arrow(labels))
    assert isinstance(sources[-2], pd.DataFrame)
    for source in sources:
        got = builder.table(source)
        assert got.select(["user_id", *NAMES]).equals(expected.select(["user_id", *NAMES])), source


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (pa.table({"user_id": ["u"]}), "missing column(s) timestamp"),
        (pa.table({"user_id": ["u"], "timestamp": ["yesterday"]}), "column timestamp"),
        (
            pa.table({"user_id": ["u", None], "timestamp": [BASE, BASE]}),
            "row 1: user_id is empty",
        ),
        (
            pa.table({"user_id": ["u"], "timestamp": [BASE], "counts": [1]}),
            "column(s) counts would be replaced",
        ),
        ("labels.txt", "expected a .parquet, .csv or .arrow"),
        (42, "not int"),
    ],
)
def test_bad_labels_are_refused_naming_the_row_and_the_column(
    tmp_path: Path, labels: Any, message: str
) -> None:
    if labels == "labels.txt":
        labels = tmp_path / "labels.txt"
        labels.write_text("user_id,timestamp\n")
    builder = TrainingSetBuilder(ArchiveTable(str(tmp_path / "archive")), FeatureEngine(), None)
    with pytest.raises(ConfigurationError) as err:
        builder.table(labels)
    assert message in str(err.value)


def test_batch_rows_come_from_the_last_run_completed_before_the_label(tmp_path: Path) -> None:
    from headwater.batch.derived import OUTPUTS_DIR, DerivedStore
    from headwater.batch.history import BatchHistory
    from headwater.batch.namespaces import USER_BATCH
    from tests.batch.conftest import make_runner, small_settings

    day = timedelta(days=1)
    signals = [
        sig(n, ("u", "w")[n % 2], ("view", "purchase", "click")[n % 3], n * 7 * timedelta(hours=1))
        for n in range(30)
    ]
    table = archive_of(tmp_path / "archive", [signals])
    store = open_online_store(f"sqlite:///{tmp_path / 'online.db'}")
    runner = make_runner(table, store, tmp_path / "control")
    first = runner.run(until=date(2026, 3, 3))
    after_first = store.get(USER_BATCH, ["u", "w"])
    runs = runner.state.runs()
    first_done = datetime.fromisoformat(runs[0].finished_at or "")
    second = runner.run(until=date(2026, 3, 8))
    after_second = store.get(USER_BATCH, ["u", "w"])
    second_done = datetime.fromisoformat(runner.state.runs()[0].finished_at or "")
    assert after_first != after_second
    history = BatchHistory(
        runner.state, DerivedStore(f"{table.root}/{OUTPUTS_DIR}"), small_settings()
    )
    builder = TrainingSetBuilder(table, FeatureEngine(), None, history)
    ms = timedelta(milliseconds=1)
    moments = [
        ("u", first_done - 10 * day),  # before any run: no batch row
        ("u", first_done + ms),
        ("w", first_done + ms),
        ("w", second_done),  # not strictly after the second run: the first one's row
        ("u", second_done + ms),
        ("w", second_done + 400 * day),
    ]
    labels = pa.table(
        {
            "user_id": [u for u, _ in moments],
            "timestamp": pa.array([t for _, t in moments], pa.timestamp("us", tz="UTC")),
        }
    )
    got = {(r["user_id"], r["timestamp"]): r for r in builder.table(labels).to_pylist()}
    assert len(got) == len(moments)
    rows = [got[key] for key in moments]
    assert rows[0]["batch"] is None
    assert rows[0]["batch_run"] is None
    expected = [
        (after_first["u"], first),
        (after_first["w"], first),
        (after_first["w"], first),
        (after_second["u"], second),
        (after_second["w"], second),
    ]
    for row, (doc, run) in zip(rows[1:], expected, strict=True):
        assert json.loads(row["batch"]) == json.loads(doc)
        assert row["batch_run"] == run.run_id
        assert row["batch_as_of"] == datetime.fromisoformat(run.as_of)
    store.close()


def test_chunk_sizes_do_not_change_the_training_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from headwater.features import history

    h = timedelta(hours=1)
    signals = [sig(n, f"u{n % 4}", TYPES[n % len(TYPES)], n * h / 3) for n in range(60)]
    table = archive_of(tmp_path / "archive", [signals])
    labels = labels_of([(f"u{n % 5}", n * h / 2) for n in range(40)], label=list(range(40)))
    builder = TrainingSetBuilder(table, FeatureEngine(), None)
    whole = builder.table(labels)
    # Users spanning Arrow batches, result chunks of a few rows.
    monkeypatch.setattr(history, "_CHUNK", 3)
    monkeypatch.setattr(history, "_FLUSH", 2)
    assert builder.table(labels).to_pylist() == whole.to_pylist()
    assert sorted(whole.column("label").to_pylist()) == list(range(40))


def test_a_failed_write_leaves_the_previous_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from headwater.features import history

    h = timedelta(hours=1)
    table = archive_of(tmp_path / "archive", [[sig(n, f"u{n}", "view", n * h) for n in range(6)]])
    labels = labels_of([(f"u{n}", 10 * h) for n in range(6)])
    out = tmp_path / "train.parquet"
    builder = TrainingSetBuilder(table, FeatureEngine(), None)
    builder.write(labels, out)
    before = out.read_bytes()
    calls = 0

    def failing(value: Any, now: int) -> Any:
        nonlocal calls
        calls += 1
        if calls > 3:
            raise RuntimeError("a feature failed to read")
        return value

    monkeypatch.setattr(history, "_FLUSH", 1)  # the first rows are written before it fails
    builder.readers = [("counts", failing)]
    with pytest.raises(RuntimeError, match="failed to read"):
        builder.write(labels, out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive", "train.parquet"]

"""The nightly batch on a real Delta table: outputs, incremental runs, backfill, windows."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path

import pytest

from headwater.archive import ArchiveTable
from headwater.batch import ITEM_COVIS, ITEM_POP, USER_BATCH
from headwater.contract.signal import Signal
from headwater.online import OnlineStore
from tests.archive._history import START, history, records, signal
from tests.batch.conftest import UNTIL, make_archive, make_runner, snapshot

WEIGHTED = {"view": 1, "click": 2, "save": 3, "add_to_cart": 3, "purchase": 5}


def _setup(tmp_path: Path, store: OnlineStore, n: int = 1500):
    archive = make_archive(tmp_path / "archive")
    sent = history(n, days=12)
    archive.handle(records(sent))
    return archive, make_runner(archive.table, store, tmp_path / "batch"), sent


def test_outputs_match_a_plain_python_computation(tmp_path: Path, store: OnlineStore) -> None:
    _archive, runner, sent = _setup(tmp_path, store)
    report = runner.run(until=UNTIL)
    assert report.as_of == "2026-03-13T00:00:00.000Z"
    events = [s for s in sent if s.item_id and s.event_type in WEIGHTED]
    # Popularity of one surface and day.
    day = START + timedelta(days=2)
    pop = Counter(s.item_id for s in events if s.surface == "web" and s.timestamp.date() == day)
    row = json.loads(store.get(ITEM_POP, [f"web:{day}"])[f"web:{day}"])
    assert {x["item_id"]: x["events"] for x in row["items"]} == dict(pop)
    # Co-visitation: distinct (user, day) pairs that hold both items.
    baskets: dict[tuple[str, date], set[str]] = defaultdict(set)
    for s in events:
        if s.event_type in ("view", "click", "purchase"):
            baskets[(s.user_id, s.timestamp.date())].add(str(s.item_id))
    pairs: Counter[tuple[str, str]] = Counter()
    for items in baskets.values():
        for a in items:
            for b in items:
                if a != b:
                    pairs[(a, b)] += 1
    item = max({a for a, _ in pairs}, key=lambda a: sum(v for (x, _), v in pairs.items() if x == a))
    covis = json.loads(store.get(ITEM_COVIS, [item])[item])
    expected = sorted(
        ((b, v) for (a, b), v in pairs.items() if a == item), key=lambda x: (-x[1], x[0])
    )[:20]
    assert [(x["item_id"], x["score"]) for x in covis["items"]] == expected
    # A user's 90-day category affinity and purchase aggregates.
    user = Counter(s.user_id for s in events).most_common(1)[0][0]
    mine = [s for s in events if s.user_id == user]
    # The category of an item-day is the one its events carry (a save carries none).
    groups: dict[tuple[str, date], list[Signal]] = defaultdict(list)
    for s in mine:
        groups[(str(s.item_id), s.timestamp.date())].append(s)
    weights: Counter[str] = Counter()
    for group in groups.values():
        category = max(
            (s.payload["category"] for s in group if "category" in s.payload), default=None
        )
        if category is not None:
            weights[category] += sum(WEIGHTED[s.event_type] for s in group)
    doc = json.loads(store.get(USER_BATCH, [user])[user])
    total = sum(weights.values())
    got = [tuple(x) for x in doc["category_affinity_90d"]]
    ranked = sorted(weights.items(), key=lambda cw: (-cw[1], cw[0]))[:10]
    assert got == [(c, round(w / total, 4)) for c, w in ranked]
    assert doc["purchases_90d"] == sum(s.event_type == "purchase" for s in mine)
    assert doc["distinct_items_viewed_90d"] == len(
        {s.item_id for s in mine if s.event_type == "view"}
    )
    assert doc["as_of"] == report.as_of


def test_second_run_computes_nothing_and_changes_nothing(
    tmp_path: Path, store: OnlineStore
) -> None:
    _archive, runner, _sent = _setup(tmp_path, store)
    first = runner.run(until=UNTIL)
    assert len(first.days_computed) == 12
    before = {ns: snapshot(store, ns) for ns in (USER_BATCH, ITEM_COVIS, ITEM_POP)}
    second = runner.run(until=UNTIL)
    assert second.days_computed == []
    assert second.days_current == 12
    assert {ns: snapshot(store, ns) for ns in (USER_BATCH, ITEM_COVIS, ITEM_POP)} == before


def test_late_events_recompute_only_their_day(tmp_path: Path, store: OnlineStore) -> None:
    archive, runner, _sent = _setup(tmp_path, store)
    runner.run(until=UNTIL)
    late_day = START + timedelta(days=4)
    late = [
        signal(10_000 + i, "purchase", "late-user", "i-late", late_day, minute=i) for i in range(3)
    ]
    archive.handle(records(late, offsets=dict.fromkeys(range(4), 10000)))
    report = runner.run(until=UNTIL)
    assert report.days_computed == [late_day.isoformat()]
    doc = json.loads(store.get(USER_BATCH, ["late-user"])["late-user"])
    assert doc["purchases_90d"] == 3
    assert doc["purchased_items_90d"] == ["i-late"]


def test_backfill_recomputes_only_the_given_days(tmp_path: Path, store: OnlineStore) -> None:
    _archive, runner, _sent = _setup(tmp_path, store)
    runner.run(until=UNTIL)
    stamps = {d: c.computed_at for d, c in runner.state.days().items()}
    lines: list[str] = []
    start, end = START + timedelta(days=3), START + timedelta(days=5)
    report = runner.run(start=start, end=end, progress=lines.append)
    assert report.kind == "backfill"
    assert report.days_computed == [(start + timedelta(days=i)).isoformat() for i in range(3)]
    after = runner.state.days()
    changed = sorted(d for d in after if after[d].computed_at != stamps[d])
    assert changed == report.days_computed
    assert report.as_of == "2026-03-13T00:00:00.000Z", "a backfill keeps the window end"
    assert any("days 2026-03-04..2026-03-06 (3/3)" in line for line in lines), lines
    assert runner.state.runs(1)[0].kind == "backfill"


def test_days_past_the_window_are_dropped(tmp_path: Path, store: OnlineStore) -> None:
    _archive, runner, sent = _setup(tmp_path, store)
    runner.run(until=UNTIL)
    later = UNTIL + timedelta(days=85)  # the 90-day window now starts after day 5
    report = runner.run(until=later)
    first = (later - timedelta(days=89)).isoformat()
    assert report.days_dropped == sorted(
        d for d in {s.timestamp.date().isoformat() for s in sent} if d < first
    )
    assert min(runner.state.days()) >= first
    assert all(d >= first for d in runner.derived.days())


def test_status_reports_days_and_runs(tmp_path: Path, store: OnlineStore) -> None:
    archive, runner, _sent = _setup(tmp_path, store)
    assert runner.status()["as_of_day"] is None
    runner.run(until=UNTIL)
    archive.handle(
        records([signal(20_000, "view", "x", "i1", START)], offsets=dict.fromkeys(range(4), 20000))
    )
    status = runner.status()
    assert status["as_of_day"] == UNTIL.isoformat()
    assert status["computed_days"] == 12
    assert status["changed_since_computed"] == [START.isoformat()]
    assert status["runs"][0]["status"] == "ok"


def test_signal_helper_is_deterministic() -> None:
    assert history(50) == history(50)
    assert isinstance(history(1)[0], Signal)


def test_object_storage_read_path_gives_the_same_outputs(
    tmp_path: Path, store: OnlineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On object storage the batch reads through deltalake into Arrow instead of DuckDB's
    # read_parquet on local files: both paths must give the same bytes.
    archive, runner, _sent = _setup(tmp_path, store)
    runner.run(until=UNTIL)
    local = {ns: snapshot(store, ns) for ns in (USER_BATCH, ITEM_COVIS, ITEM_POP)}
    monkeypatch.setattr(ArchiveTable, "remote", property(lambda _self: True))
    assert archive.table.remote
    report = runner.run(start=START, end=UNTIL)
    assert len(report.days_computed) == 12
    assert {ns: snapshot(store, ns) for ns in (USER_BATCH, ITEM_COVIS, ITEM_POP)} == local

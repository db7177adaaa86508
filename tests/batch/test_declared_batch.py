"""Declared batch features on a real Delta archive: the defaults give the bytes of the
fixed SQL, a feature declared in the file (no code) reaches the store, the read API and
recommendations, and erasure takes a user's contribution out of it."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from headwater.application import Application
from headwater.batch import (
    ITEM_COVIS,
    ITEM_POP,
    USER_BATCH,
    BatchErasureParticipant,
    BatchSettings,
)
from headwater.batch.declared import parse_batch_features
from headwater.batch.outputs import window_start
from headwater.batch.runner import DAY_TABLES_KEY
from headwater.batch.sql import as_of_text
from headwater.config import Settings
from headwater.contract.signal import Signal
from headwater.erasure.events import ErasureEvent
from headwater.gateway.app import create_app
from headwater.online import OnlineStore, open_online_store
from tests.archive._history import START, history, records, signal, without_user
from tests.batch import _sql_before as before
from tests.batch.conftest import UNTIL, make_archive, make_runner, snapshot

DEFAULT_NAMESPACES = (USER_BATCH, ITEM_COVIS, ITEM_POP)
#: Columns the day aggregates had before the per-type counts.
OLD_COLUMNS = {
    "user_item_day": "date, user_id, item_id, category, brand, views, clicks, purchases, "
    "spend, weight, last_at",
    "item_pair_day": "date, item_a, item_b, users",
    "item_pop_day": "date, surface, item_id, category, brand, events, users, score",
}

DECLARED = [
    {
        "name": "brand_affinity_7d",
        "kind": "affinity",
        "attribute": "brand",
        "window": "7d",
        "weights": {"view": 1, "purchase": 10},
        "top_k": 50,
    },
    {
        "name": "bought_together",
        "kind": "co_visitation",
        "event_types": ["add_to_cart", "purchase"],
        "window": "30d",
        "top_k": 20,
        "min_support": 1,
    },
    {
        "name": "purchase_pop",
        "kind": "popularity",
        "event_types": ["purchase"],
        "window": "7d",
        "top_k": 500,
    },
]


def _rows(con: Any, sql: str) -> dict[str, bytes]:
    return {str(k): str(d).encode() for k, d in con.execute(sql).fetchall()}


def test_the_defaults_reproduce_the_fixed_sql_exactly(tmp_path: Path, store: OnlineStore) -> None:
    archive = make_archive(tmp_path / "archive")
    archive.handle(records(history(1500, days=12)))
    runner = make_runner(archive.table, store, tmp_path / "batch")
    runner.run(until=UNTIL)
    got = {ns: snapshot(store, ns) for ns in DEFAULT_NAMESPACES}
    cfg, derived = runner.cfg, runner.derived
    end = UNTIL.isoformat()
    as_of = as_of_text(end)
    long_start = window_start(end, cfg.lookback_days)
    with runner.connect() as con:
        uid = derived.relation(con, "user_item_day", start=long_start, end=end)
        pairs = derived.relation(
            con, "item_pair_day", start=window_start(end, cfg.covis_days), end=end
        )
        pop = derived.relation(con, "item_pop_day", start=long_start, end=end)
        expected = {
            USER_BATCH: _rows(
                con,
                before.user_batch_sql(
                    uid,
                    as_of_day=end,
                    as_of=as_of,
                    cfg=cfg,
                    short_start=window_start(end, cfg.affinity_short_days),
                ),
            ),
            ITEM_COVIS: _rows(
                con, before.item_covis_sql(pairs, as_of=as_of, cfg=cfg, window_days=cfg.covis_days)
            ),
            ITEM_POP: _rows(
                con,
                before.item_pop_sql(
                    pop,
                    as_of=as_of,
                    cfg=cfg,
                    recent_start=window_start(end, cfg.popularity_days),
                ),
            ),
        }
        # The day aggregates: the former columns hold the same rows as the former SQL.
        files = runner.archive.days()
        days = sorted(files)
        con.execute(
            "CREATE TEMP TABLE old_ev AS "
            + before.events_sql(runner.source(con, days, files), dedupe=True)
        )
        con.execute(f"CREATE TEMP TABLE old_uid AS {before.user_item_day_sql('old_ev')}")
        fresh = {
            "user_item_day": "SELECT * FROM old_uid",
            "item_pair_day": before.item_pair_day_sql("old_uid", cfg),
            "item_pop_day": before.item_pop_day_sql("old_ev"),
        }
        for table, columns in OLD_COLUMNS.items():
            stored = f"SELECT {columns} FROM {derived.relation(con, table)}"
            old = f"SELECT {columns} FROM ({fresh[table]})"
            ((n_stored,),) = con.execute(f"SELECT count(*) FROM ({stored})").fetchall()
            differ = con.execute(
                f"SELECT (SELECT count(*) FROM ({stored} EXCEPT ALL {old})) "
                f"+ (SELECT count(*) FROM ({old} EXCEPT ALL {stored}))"
            ).fetchall()
            assert n_stored > 0
            assert differ == [(0,)], table
    assert all(expected[ns] for ns in DEFAULT_NAMESPACES)
    assert got == expected


def test_days_in_the_former_layout_are_computed_again(tmp_path: Path, store: OnlineStore) -> None:
    archive = make_archive(tmp_path / "archive")
    archive.handle(records(history(800, days=6)))
    runner = make_runner(archive.table, store, tmp_path / "batch")
    runner.run(until=UNTIL)
    outputs = {ns: snapshot(store, ns) for ns in DEFAULT_NAMESPACES}
    # As an earlier version left them: day files without the per-type counts.
    files = runner.archive.days()
    days = sorted(files)
    with runner.connect() as con:
        con.execute(
            "CREATE TEMP TABLE ev AS "
            + before.events_sql(runner.source(con, days, files), dedupe=True)
        )
        con.execute(f"CREATE TEMP TABLE uid AS {before.user_item_day_sql('ev')}")
        runner.derived.replace(
            con,
            {
                "user_item_day": "SELECT * FROM uid",
                "item_pair_day": before.item_pair_day_sql("uid", runner.cfg),
                "item_pop_day": before.item_pop_day_sql("ev"),
            },
            days,
        )
        columns = _columns(con, runner)
    assert "saves" not in columns
    runner.state.set_meta(DAY_TABLES_KEY, "1")
    report = runner.run(until=UNTIL)
    assert report.days_computed == days
    assert runner.state.get_meta(DAY_TABLES_KEY) == "2"
    assert {ns: snapshot(store, ns) for ns in DEFAULT_NAMESPACES} == outputs
    with runner.connect() as con:
        columns = _columns(con, runner)
    assert {"saves", "add_to_carts"} <= columns


def _columns(con: Any, runner: Any) -> set[str]:
    """The columns of a stored ``user_item_day`` file."""
    path = runner.derived.files("user_item_day")[0]
    where = str(Path(runner.derived.url) / path)
    return {
        str(c) for (c,) in con.execute("SELECT name FROM parquet_schema(?)", [where]).fetchall()
    }


# -- a feature declared in the file, no code ---------------------------------------


def _affinity(sent: list[Signal], user: str, end: date) -> list[list[object]]:
    """brand_affinity_7d as a plain Python computation."""
    weights = {"view": 1, "purchase": 10}
    groups: dict[tuple[str, date], list[Signal]] = defaultdict(list)
    for s in sent:
        day = s.timestamp.date()
        batch_type = s.event_type in ("view", "click", "save", "add_to_cart", "purchase")
        recent = end - timedelta(days=6) <= day <= end
        if s.user_id == user and s.item_id and batch_type and recent:
            groups[(s.item_id, day)].append(s)
    totals: Counter[str] = Counter()
    for group in groups.values():
        brand = max((s.payload["brand"] for s in group if "brand" in s.payload), default=None)
        if brand is not None:
            totals[brand] += sum(weights.get(s.event_type, 0) for s in group)
    total = sum(totals.values())
    ranked = sorted(((b, w) for b, w in totals.items() if w > 0), key=lambda bw: (-bw[1], bw[0]))
    return [[b, round(w / total, 4)] for b, w in ranked[:50]]


def _purchases(sent: list[Signal], end: date, days: int) -> Counter[str]:
    first = end - timedelta(days=days - 1)
    return Counter(
        str(s.item_id)
        for s in sent
        if s.event_type == "purchase" and s.item_id and first <= s.timestamp.date() <= end
    )


def test_a_declared_feature_reaches_the_store_the_read_api_and_recommendations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HEADWATER_ONLINE_URL", "HEADWATER_BUS_URL", "HEADWATER_CONTROL_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("HEADWATER_ARCHIVE_URL", raising=False)
    path = tmp_path / "features.yaml"
    path.write_text(
        json.dumps(
            {
                "features": [
                    {"name": "recently_viewed", "kind": "recent_items", "event_types": ["view"]}
                ],
                "batch": DECLARED,
            }
        )
    )
    monkeypatch.setenv("HEADWATER_FEATURES_FILE", str(path))
    sent = history(1500, days=12)
    with Application(Settings.from_env(tmp_path / "hw")) as hw:
        hw.register_shipped_contracts()
        hw.open_archive_consumer().handle(records(sent))
        hw.open_batch_runner().run(until=UNTIL)
        store = hw.online
        # The store: the affinity in the user row, each item feature in its own namespace.
        user = Counter(s.user_id for s in sent).most_common(1)[0][0]
        row = json.loads(store.get(USER_BATCH, [user])[user])
        assert row["brand_affinity_7d"] == _affinity(sent, user, UNTIL)
        assert row["brand_affinity_7d"], "the user bought or viewed in the last 7 days"
        assert "category_affinity_30d" not in row, "the declaration replaces the defaults"
        assert store.keys(ITEM_POP) == []
        assert store.keys(ITEM_COVIS) == []
        pop = json.loads(store.get("purchase_pop", ["*:7d"])["*:7d"])
        expected = _purchases(sent, UNTIL, 7)
        assert {x["item_id"]: x["events"] for x in pop["items"]} == dict(expected)
        assert all(x["score"] == 5.0 * x["events"] for x in pop["items"])
        assert not [k for k in store.keys("purchase_pop") if not k.endswith(":7d")], "daily off"
        baskets: dict[tuple[str, date], set[str]] = defaultdict(set)
        for s in sent:
            if s.item_id and s.event_type in ("add_to_cart", "purchase"):
                baskets[(s.user_id, s.timestamp.date())].add(str(s.item_id))
        pairs: Counter[tuple[str, str]] = Counter()
        for items in baskets.values():
            pairs.update((a, b) for a in items for b in items if a != b)
        item = sorted({a for a, _ in pairs})[0]
        covis = json.loads(store.get("bought_together", [item])[item])
        want = sorted(
            ((b, v) for (a, b), v in pairs.items() if a == item), key=lambda x: (-x[1], x[0])
        )
        assert [(x["item_id"], x["score"]) for x in covis["items"]] == want[:20]
        assert set(store.keys("bought_together")) == {a for a, _ in pairs}

        # The read API: the batch row under the declared names, with its as_of.
        key, _ = hw.keys.create("reads", roles=("reader",), kind="service")
        with TestClient(create_app(hw), headers={"Authorization": f"Bearer {key}"}) as client:
            answer = client.get(f"/v1/users/{user}/features").json()
            assert answer["batch"]["brand_affinity_7d"] == row["brand_affinity_7d"]
            assert answer["batch_as_of"] == "2026-03-13T00:00:00.000Z"
            only = client.get(
                f"/v1/users/{user}/features", params={"features": "brand_affinity_7d"}
            ).json()
            assert only["batch"] == {"brand_affinity_7d": row["brand_affinity_7d"]}
            assert client.get("/v1/users/nobody/features").json()["batch"] == {}
            streaming = client.get(
                f"/v1/users/{user}/features", params={"features": "recently_viewed"}
            ).json()
            assert streaming["batch"] == {}, "a streaming selection does not read the batch row"
            assert list(streaming["features"]) == ["recently_viewed"]
            assert set(answer["batch"]) == {
                "brand_affinity_7d",
                *(k for k in row if k not in ("as_of", "brand_affinity_7d")),
            }
            # Recommendations read the declared popularity and co-visitation by name.
            reco = client.get("/v1/users/nobody/recommendations", params={"k": 5}).json()
            used = reco["features_used"]
            assert used["purchase_pop"]["used"] is True
            assert used["purchase_pop"]["note"] == "web:7d"
            assert "bought_together" in used
            assert "item_pop" not in used
            web = _purchases([s for s in sent if s.surface == "web"], UNTIL, 7)
            best = sorted(web.items(), key=lambda iv: (-iv[1], iv[0]))[0][0]
            assert reco["items"][0]["item_id"] == best
            assert reco["items"][0]["reason"].startswith("popular on web in the last 7 days")


# -- erasure -------------------------------------------------------------------------

VICTIM = "victim"


def _victim() -> list[Signal]:
    out = []
    for n, d in enumerate((2, 8, 10)):
        day = START + timedelta(days=d)
        out += [
            signal(60_000 + 10 * n, "purchase", VICTIM, "i-victim-a", day, minute=3),
            signal(60_001 + 10 * n, "add_to_cart", VICTIM, "i-victim-b", day, minute=4),
            signal(60_002 + 10 * n, "view", VICTIM, "i000", day, minute=5),
        ]
    return out


def _declared_store(store: OnlineStore) -> dict[str, dict[str, Any]]:
    return {
        ns: {k: json.loads(v) for k, v in snapshot(store, ns).items()}
        for ns in (USER_BATCH, "bought_together", "purchase_pop")
    }


def test_erasure_takes_the_user_out_of_declared_outputs(tmp_path: Path, store: OnlineStore) -> None:
    declared = parse_batch_features(DECLARED)
    sent = history(1500, days=12) + _victim()
    archive = make_archive(tmp_path / "a" / "archive")
    archive.handle(records(sent))
    runner = make_runner(archive.table, store, tmp_path / "a" / "batch", declared=declared)
    runner.run(until=UNTIL)
    before_erasure = _declared_store(store)
    assert "brand_affinity_7d" in before_erasure[USER_BATCH][VICTIM]
    assert before_erasure["bought_together"]["i-victim-a"]["items"][0]["item_id"] == "i-victim-b"
    recent = before_erasure["purchase_pop"]["*:7d"]["items"]
    assert "i-victim-a" in [x["item_id"] for x in recent]

    event = ErasureEvent(request_id="r-decl", user_id=VICTIM, requested_at=datetime.now(UTC))
    archive.erase(event)
    (conf,) = BatchErasureParticipant(runner, archive.ledger).erase(event)
    assert conf.ok
    assert conf.rows_remaining == 0
    assert {"bought_together", "purchase_pop"} <= set(conf.evidence["online_recomputed"])

    after = _declared_store(store)
    assert VICTIM not in after[USER_BATCH]
    assert "i-victim-a" not in after["bought_together"]
    assert "i-victim-a" not in [x["item_id"] for x in after["purchase_pop"]["*:7d"]["items"]]
    # The oracle: the same declaration over an archive that never held the user.
    clean = make_archive(tmp_path / "b" / "archive")
    clean.handle(records(without_user(sent, VICTIM)))
    clean_store = open_online_store(f"sqlite:///{tmp_path / 'b' / 'online.db'}")
    make_runner(clean.table, clean_store, tmp_path / "b" / "batch", declared=declared).run(
        until=UNTIL
    )
    assert after == _declared_store(clean_store)
    clean_store.close()


def test_a_feature_no_longer_declared_has_its_namespace_emptied(
    tmp_path: Path, store: OnlineStore
) -> None:
    archive = make_archive(tmp_path / "archive")
    archive.handle(records(history(600, days=12)))
    declared = parse_batch_features(DECLARED)
    control = tmp_path / "batch"
    make_runner(archive.table, store, control, declared=declared).run(until=UNTIL)
    assert store.keys("purchase_pop")
    lines: list[str] = []
    runner = make_runner(archive.table, store, control, declared=declared[:2])
    runner.run(until=UNTIL, progress=lines.append)
    assert store.keys("purchase_pop") == []
    assert store.keys("bought_together")
    assert any("no longer declared: ['purchase_pop']" in line for line in lines), lines


def test_small_settings_keep_the_default_declaration() -> None:
    assert BatchSettings(declared=None).features()[-1].name == ITEM_POP


def test_training_sets_carry_the_declared_batch_features(
    tmp_path: Path, store: OnlineStore
) -> None:
    import pyarrow as pa

    from headwater.batch.derived import OUTPUTS_DIR, DerivedStore
    from headwater.batch.history import BatchHistory
    from headwater.features.engine import FeatureEngine
    from headwater.features.history import TrainingSetBuilder

    archive = make_archive(tmp_path / "archive")
    sent = history(800, days=12)
    archive.handle(records(sent))
    runner = make_runner(
        archive.table, store, tmp_path / "batch", declared=parse_batch_features(DECLARED)
    )
    runner.run(until=UNTIL)
    users = sorted({s.user_id for s in sent})[:3]
    rows = store.get(USER_BATCH, users)
    finished = datetime.fromisoformat(runner.state.runs()[0].finished_at or "")
    batch = BatchHistory(
        runner.state, DerivedStore(f"{archive.table.root}/{OUTPUTS_DIR}"), runner.cfg
    )
    labels = pa.table(
        {
            "user_id": users,
            "timestamp": pa.array(
                [finished + timedelta(seconds=1)] * len(users), pa.timestamp("us", tz="UTC")
            ),
        }
    )
    got = TrainingSetBuilder(archive.table, FeatureEngine(), None, batch).table(labels).to_pylist()
    assert [r["user_id"] for r in got] == users
    for r in got:
        doc = json.loads(r["batch"])
        assert doc == json.loads(rows[r["user_id"]])
        assert "brand_affinity_7d" in doc

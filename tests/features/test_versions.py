"""Feature definitions as versioned documents: plan, apply on every control plane, and
the switch of a running consumer and reader without a restart."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from headwater.bus.base import KIND_SIGNAL, Record
from headwater.contract.signal import Signal, encode_signal
from headwater.control import ControlDatabase, open_control_database
from headwater.errors import ConfigurationError
from headwater.features.consumer import FeatureConsumer
from headwater.features.engine import FeatureEngine
from headwater.features.live import LiveDefinitions
from headwater.features.plan import plan_features
from headwater.features.reader import FeatureReader
from headwater.features.spec import DEFAULT_FEATURES, FeatureSpec, load_features
from headwater.features.versions import FeatureVersions
from headwater.online import OnlineStore, open_online_store

_OPEN: list[ControlDatabase | OnlineStore] = []


@pytest.fixture(autouse=True)
def _close() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def versions(url: str) -> FeatureVersions:
    db = open_control_database(url)
    _OPEN.append(db)
    return FeatureVersions(db)


def replaced(name: str, **changes: object) -> tuple[FeatureSpec, ...]:
    return tuple(
        msgspec.structs.replace(s, **changes) if s.name == name else s for s in DEFAULT_FEATURES
    )


PURCHASED = FeatureSpec(
    name="recently_purchased", kind="recent_items", event_types=("purchase",), size=5
)


# -- plan -------------------------------------------------------------------------------


def test_plan_tells_compatible_changes_from_those_needing_a_backfill() -> None:
    proposed = (
        *replaced("rating", description="another text"),
        PURCHASED,
    )
    proposed = tuple(
        msgspec.structs.replace(s, window_s=3600.0) if s.name == "active_surfaces_24h" else s
        for s in proposed
        if s.name != "recently_clicked"
    )
    plan = plan_features(DEFAULT_FEATURES, proposed)
    assert plan.added == ("recently_purchased",)
    assert plan.removed == ("recently_clicked",)
    changes = {c.name: c for c in plan.changed}
    assert changes["rating"].fields == ("description",)
    assert not changes["rating"].backfill
    assert changes["active_surfaces_24h"].fields == ("window_s",)
    assert changes["active_surfaces_24h"].backfill
    assert set(plan.backfills) == {"recently_purchased", "active_surfaces_24h"}
    assert "counts" in plan.unchanged
    lines = "\n".join(plan.describe())
    assert "~ rating (description changed: compatible)" in lines
    assert "~ active_surfaces_24h (window_s changed: backfill from the archive)" in lines
    assert "- recently_clicked" in lines


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", 50),
        ("event_types", ("view", "click")),
        ("windows_s", (60.0,)),
        ("kind", "count"),
        ("remove_when", {"action": "delete"}),
    ],
)
def test_every_change_of_computation_needs_a_backfill(field: str, value: object) -> None:
    name = "window_counts" if field == "windows_s" else "recently_saved"
    plan = plan_features(DEFAULT_FEATURES, replaced(name, **{field: value}))
    assert [(c.name, c.fields, c.backfill) for c in plan.changed] == [(name, (field,), True)]


def test_same_set_is_an_empty_plan_and_reordering_is_compatible() -> None:
    assert plan_features(DEFAULT_FEATURES, DEFAULT_FEATURES).empty
    reordered = plan_features(DEFAULT_FEATURES, tuple(reversed(DEFAULT_FEATURES)))
    assert reordered.reordered
    assert not reordered.backfills
    assert not reordered.empty


# -- apply on every control plane ----------------------------------------------------------


def test_apply_registers_versions_all_or_nothing(control_url: str) -> None:
    reg = versions(control_url)
    assert reg.current() is None
    assert reg.ensure_initial(DEFAULT_FEATURES)
    assert not reg.ensure_initial(DEFAULT_FEATURES)  # a second start registers nothing
    first = reg.current()
    assert first is not None
    assert first.version == 1
    assert set(first.defined_in.values()) == {1}
    assert not first.backfilling

    proposed = (*replaced("window_counts", windows_s=(600.0,)), PURCHASED)
    plan, second = reg.apply(proposed)
    assert plan.added == ("recently_purchased",)
    assert second is not None
    assert second.version == 2
    assert second.defined_in["recently_purchased"] == 2
    assert second.defined_in["window_counts"] == 2
    assert second.defined_in["counts"] == 1
    assert set(second.backfilling) == {"recently_purchased", "window_counts"}
    assert "recently_purchased" not in {s.name for s in second.ready_specs}

    # A compatible change keeps the definition version and the state.
    described = tuple(
        msgspec.structs.replace(s, description="changed") if s.name == "counts" else s
        for s in proposed
    )
    plan3, third = reg.apply(described)
    assert not plan3.backfills
    assert third is not None
    assert third.version == 3
    assert third.defined_in["counts"] == 1
    assert set(third.backfilling) == {"recently_purchased", "window_counts"}

    # The same set again registers nothing; an invalid one is refused whole.
    assert reg.apply(described) == (plan_features(described, described), None)
    with pytest.raises(ConfigurationError, match="repeat: counts"):
        reg.apply((*described, DEFAULT_FEATURES[0]))
    assert reg.head()[0] == 3
    assert [v for v, *_ in reg.history()] == [1, 2, 3]

    # A finished backfill moves the revision (what running processes poll).
    _, revision = reg.head()
    reg.set_state("recently_purchased", 2, "ready", {"users_done": 3, "users_total": 3})
    assert reg.head() == (3, revision + 1)
    now = reg.current()
    assert now is not None
    assert now.backfilling == ("window_counts",)
    assert reg.progress()["recently_purchased@2"]["users_done"] == 3


def test_apply_without_backfill_is_ready_at_once(control_url: str) -> None:
    reg = versions(control_url)
    reg.ensure_initial(DEFAULT_FEATURES)
    _, registered = reg.apply((*DEFAULT_FEATURES, PURCHASED), backfill=False)
    assert registered is not None
    assert not registered.backfilling


def test_concurrent_registrations_get_distinct_versions(control_url: str) -> None:
    first, second = versions(control_url), versions(control_url)
    first.ensure_initial(DEFAULT_FEATURES)
    first.apply((*DEFAULT_FEATURES, PURCHASED))
    other = msgspec.structs.replace(PURCHASED, name="recently_rated", event_types=("rating",))
    _, registered = second.apply((*DEFAULT_FEATURES, PURCHASED, other))
    assert registered is not None
    assert registered.version == 3
    assert registered.defined_in["recently_purchased"] == 2


def test_an_invalid_file_names_the_feature_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "features.yaml"
    bad.write_text("features:\n  - name: x\n    kind: count\n    size: many\n")
    with pytest.raises(ConfigurationError, match=r"feature 'x'.*size"):
        load_features(bad)
    bad.write_text("features:\n  - name: x\n    kind: nonsense\n")
    with pytest.raises(ConfigurationError, match=r"feature 'x'.*kind"):
        load_features(bad)


# -- a running consumer and reader switch without a restart ------------------------------

NOW = datetime.now(UTC).replace(microsecond=0)


def record(offset: int, user: str, etype: str = "view", item: str = "i1") -> Record:
    sig = Signal(
        event_id=f"e{offset}",
        event_type=etype,
        user_id=user,
        surface="web",
        timestamp=NOW - timedelta(seconds=100 - offset),
        item_id=item,
        payload={},
    )
    return Record(0, offset, user, KIND_SIGNAL, encode_signal(sig), int(NOW.timestamp() * 1000))


def test_consumer_and_reader_switch_at_the_next_batch(tmp_path: Path) -> None:
    reg = versions(f"sqlite:///{tmp_path}/control.db")
    reg.ensure_initial(DEFAULT_FEATURES)
    store = open_online_store(f"sqlite:///{tmp_path}/online.db")
    _OPEN.append(store)
    live = LiveDefinitions(reg, FeatureEngine(), interval_s=0.0)
    consumer = FeatureConsumer(
        store, live.engine(stream=True), record_freshness=False, definitions=live
    )
    reader_live = LiveDefinitions(reg, FeatureEngine(), interval_s=0.0)
    reader = FeatureReader(
        store,
        reader_live.engine(stream=False),
        partition_of=lambda _user: 0,
        definitions=reader_live,
    )
    consumer.handle([record(0, "u1", "purchase", "p1"), record(1, "u1", "view")])
    answer = reader.read("u1")
    assert answer.versions["counts"] == 1
    assert answer.definitions_version == 1
    assert answer.features["counts"] == {"purchase": 1, "view": 1}

    # Version 2 adds a feature (backfilling) and changes counts without a backfill.
    counts_views = msgspec.structs.replace(DEFAULT_FEATURES[0], event_types=("view",))
    reg.apply((counts_views, *DEFAULT_FEATURES[1:]), backfill=False)
    reg.apply((counts_views, *DEFAULT_FEATURES[1:], PURCHASED))
    answer = reader.read("u1")
    assert answer.definitions_version == 3
    assert answer.backfilling == ["recently_purchased"]
    assert "recently_purchased" not in answer.features  # never answered empty
    assert answer.versions["counts"] == 2
    assert answer.versions["recently_purchased"] == 3
    # The row's counts were computed under version 1: not answered as version 2's.
    assert answer.features["counts"] == {}

    consumer.handle([record(2, "u1", "view"), record(3, "u1", "purchase", "p2")])
    switches = reg.switches(3)
    assert [(s.group, s.positions) for s in switches] == [("features", {0: 2})]
    answer = reader.read("u1")
    assert answer.features["counts"] == {"view": 1}  # from the switch on, views only
    assert answer.backfilling == ["recently_purchased"]
    row = consumer.engine.decode(store.get("user", ["u1"])["u1"])
    assert "recently_purchased" not in row  # the stream waits for the backfill


def test_the_read_api_names_versions_and_backfilling_features(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from headwater.application import Application
    from headwater.config import Settings
    from headwater.gateway.app import create_app
    from tests._gateway_fixtures import auth

    with Application(Settings.from_env(tmp_path / "hw")) as hw:
        hw.register_shipped_contracts()
        hw.feature_versions.apply((*DEFAULT_FEATURES, PURCHASED))
        reader, _ = hw.keys.create("recommendations", roles=("reader",), kind="service")
        with TestClient(create_app(hw), headers=auth(reader)) as client:
            answer = client.get("/v1/users/u1/features").json()
            batch = client.post("/v1/features/batch", json={"user_ids": ["u1"]}).json()
    assert answer["definitions_version"] == 2
    assert answer["versions"]["recently_purchased"] == 2
    assert answer["versions"]["counts"] == 1
    assert answer["backfilling"] == ["recently_purchased"]
    assert "recently_purchased" not in answer["features"]
    assert batch["users"][0]["backfilling"] == ["recently_purchased"]

"""The ``batch:`` section of the features file: parsed, checked, errors that name the
feature, the key and the rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from headwater.batch import (
    EVENT_WEIGHTS,
    BatchFeature,
    BatchSettings,
    default_batch_features,
    load_batch_features,
)
from headwater.batch.declared import check_windows, parse_batch_features
from headwater.config import Settings
from headwater.errors import ConfigurationError

FILE = """
features:
  - name: counts
    kind: count
batch:
  - name: brand_affinity_7d
    kind: affinity
    attribute: brand
    window: 7d
    weights: {view: 1, purchase: 10}
    top_k: 5
  - name: bought_together
    kind: co_visitation
    event_types: [purchase]
    window_days: 60
    top_k: 10
    min_support: 3
    items_per_user_day: 5
  - name: purchase_pop
    kind: popularity
    event_types: [purchase]
    window: 14d
    top_k: 50
    daily: false
    description: Most bought items
"""


def test_a_file_with_a_batch_section_gives_its_features(tmp_path: Path) -> None:
    path = tmp_path / "features.yaml"
    path.write_text(FILE)
    features = load_batch_features(path)
    assert features == (
        BatchFeature(
            name="brand_affinity_7d",
            kind="affinity",
            attribute="brand",
            window_days=7,
            weights={"view": 1.0, "purchase": 10.0},
            top_k=5,
        ),
        BatchFeature(
            name="bought_together",
            kind="co_visitation",
            window_days=60,
            weights={"purchase": 1.0},
            top_k=10,
            min_support=3,
            items_per_user_day=5,
        ),
        BatchFeature(
            name="purchase_pop",
            kind="popularity",
            window_days=14,
            weights={"purchase": 5.0},  # event_types alone: the batch's own weights
            top_k=50,
            description="Most bought items",
        ),
    )


def test_no_batch_section_means_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "features.yaml"
    path.write_text("features:\n  - {name: counts, kind: count}\n")
    assert load_batch_features(path) is None
    cfg = BatchSettings()
    assert cfg.features() == default_batch_features(cfg)
    names = [f.name for f in cfg.features()]
    assert names == [
        "category_affinity_30d",
        "category_affinity_90d",
        "brand_affinity_30d",
        "brand_affinity_90d",
        "item_covis",
        "item_pop",
    ]
    assert all(f.default_weights for f in cfg.features() if f.kind != "co_visitation")
    assert cfg.features()[0].weights == EVENT_WEIGHTS


def test_the_defaults_follow_the_batch_settings() -> None:
    cfg = BatchSettings(lookback_days=60, covis_days=14, covis_min_support=4)
    by_name = {f.name: f for f in cfg.features()}
    assert by_name["category_affinity_60d"].window_days == 60
    assert by_name["item_covis"].window_days == 14
    assert by_name["item_covis"].min_support == 4


def _one(**entry: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "f1",
        "kind": "popularity",
        "window": "7d",
        "top_k": 10,
    }
    base.update(entry)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (_one(kind="ranking"), "batch feature 'f1' 'kind': 'ranking' is not one of"),
        (_one(size=3), "batch feature 'f1': 'size' not a key of kind popularity"),
        (_one(attribute="brand"), "'attribute' not a key of kind popularity"),
        (_one(top_k=None), "batch feature 'f1': 'top_k' is required"),
        (_one(top_k=0), "batch feature 'f1' 'top_k': must be a whole number of at least 1"),
        (_one(window=None), "batch feature 'f1': 'window' is required"),
        (_one(window="36h"), "batch feature 'f1' 'window': '36h' is not a whole number of days"),
        (_one(window="soon"), "batch feature 'f1' 'window': 'soon' is not a duration"),
        (_one(window_days=3), "give 'window' or 'window_days', not both"),
        (
            _one(event_types=["search"]),
            "batch feature 'f1' 'event_types': 'search' is not aggregated by the batch",
        ),
        (_one(event_types=[]), "'event_types': must be a non-empty list"),
        (_one(event_types=["view", "view"]), "'event_types': an event type repeats"),
        (_one(weights={"view": -1}), "'weights': view: must be a number above 0"),
        (_one(weights={"view": True}), "'weights': view: must be a number above 0"),
        (_one(weights=["view"]), "'weights': must be a mapping of event type to weight"),
        (
            _one(weights={"view": 1}, event_types=["click"]),
            "'event_types' and 'weights' name different event types",
        ),
        (_one(daily="yes"), "batch feature 'f1' 'daily': must be true or false"),
        (
            _one(kind="co_visitation", weights={"view": 1}),
            "batch feature 'f1': co_visitation counts users, it takes no 'weights'",
        ),
        (_one(kind="co_visitation", min_support=0), "'min_support': must be a whole number"),
        (_one(kind="affinity"), "batch feature 'f1' 'attribute': None is not one of"),
        (_one(kind="affinity", attribute="color"), "'attribute': 'color' is not one of"),
        (_one(name="Bad-Name"), "batch feature #1 'name': 'Bad-Name' must be lower-case"),
        (_one(name=None), "batch feature #1 'name': None must be lower-case"),
        (_one(name="user_batch"), "'user_batch' is a namespace of the online store"),
    ],
)
def test_a_bad_declaration_is_refused_naming_feature_key_and_rule(
    entry: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as err:
        parse_batch_features([entry], "f.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("f.yaml: ")


def test_whole_section_errors() -> None:
    with pytest.raises(ConfigurationError, match="'batch:' must be a list"):
        parse_batch_features({"name": "x"}, "f.yaml")
    with pytest.raises(ConfigurationError, match="batch feature #2: must be a mapping"):
        parse_batch_features([_one(), "x"], "f.yaml")
    with pytest.raises(ConfigurationError, match="batch feature 'f1': the name repeats"):
        parse_batch_features([_one(), _one(kind="co_visitation")], "f.yaml")
    # An affinity is a field of the user row, not a namespace: user_batch is not reserved.
    (aff,) = parse_batch_features([_one(name="user", kind="affinity", attribute="brand")])
    assert aff.name == "user"


def test_windows_and_names_are_checked_against_the_batch_settings() -> None:
    cfg = BatchSettings(lookback_days=30)
    (long,) = parse_batch_features([_one(window="60d")])
    with pytest.raises(
        ConfigurationError, match=r"'f1' 'window': 60 days is longer than the batch"
    ):
        check_windows([long], cfg, "f.yaml")
    (clash,) = parse_batch_features(
        [_one(name="purchases_30d", kind="affinity", attribute="brand")]
    )
    with pytest.raises(ConfigurationError, match="'purchases_30d' 'name': the user row already"):
        check_windows([clash], cfg, "f.yaml")
    check_windows(cfg.features(), cfg, "defaults")


def test_the_deployment_reads_the_batch_section_when_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "features.yaml"
    path.write_text(FILE)
    monkeypatch.setenv("HEADWATER_FEATURES_FILE", str(path))
    cfg = BatchSettings.from_env(Settings.from_env(tmp_path / "hw"))
    assert [f.name for f in cfg.features()] == [
        "brand_affinity_7d",
        "bought_together",
        "purchase_pop",
    ]
    doc = yaml.safe_load(FILE)
    doc["batch"][0]["window"] = "400d"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigurationError, match="'brand_affinity_7d' 'window': 400 days"):
        BatchSettings.from_env(Settings.from_env(tmp_path / "hw"))

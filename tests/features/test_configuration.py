"""Features declared in a file, and the lateness bound, come from the deployment's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from headwater.application import Application
from headwater.config import Settings
from headwater.errors import ConfigurationError


def test_features_file_and_lateness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "features.yaml"
    spec.write_text(
        "features:\n"
        "  - {name: views, kind: count, event_types: [view]}\n"
        "  - {name: searches, kind: window_count, event_types: [search], windows: [10m, 1h]}\n"
    )
    monkeypatch.setenv("HEADWATER_FEATURES_FILE", str(spec))
    monkeypatch.setenv("HEADWATER_FEATURE_LATENESS", "15m")
    with Application(Settings.from_env(tmp_path / "hw")) as app:
        app.register_shipped_contracts()
        engine = app.new_feature_engine()
    assert [s.name for s in engine.specs] == ["views", "searches"]
    assert engine.specs[1].windows_s == (600.0, 3600.0)
    assert engine.lateness_ms == 15 * 60_000
    assert engine.budget_of(engine.specs[0]) == 60.0


def test_bad_features_file(tmp_path: Path) -> None:
    from headwater.features.spec import load_features

    bad = tmp_path / "f.yaml"
    bad.write_text("features:\n  - {name: x, kind: median}\n")
    with pytest.raises(ConfigurationError, match="x"):
        load_features(bad)
    bad.write_text("nope: 1\n")
    with pytest.raises(ConfigurationError, match="features"):
        load_features(bad)

"""``headwater features plan|apply|status`` on an embedded home."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from headwater.cli import app
from headwater.features.spec import FeatureSpec

runner = CliRunner()
PURCHASED = FeatureSpec(
    name="recently_purchased", kind="recent_items", event_types=("purchase",), size=5
)

FEATURES = """
features:
  - {name: counts, kind: count, description: Events per type}
  - {name: recent_views, kind: recent_items, event_types: [view], size: 10}
"""

CHANGED = """
features:
  - {name: counts, kind: count, description: All events per type}
  - {name: recent_views, kind: recent_items, event_types: [view], size: 30}
  - {name: recently_purchased, kind: recent_items, event_types: [purchase], size: 5}
"""


def test_plan_apply_status(tmp_path: Path) -> None:
    home = tmp_path / "hw"
    first, second = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    first.write_text(FEATURES)
    second.write_text(CHANGED)
    env = {"HEADWATER_HOME": str(home), "HEADWATER_FEATURES_FILE": str(first)}

    result = runner.invoke(app, ["features", "plan", str(first)], env=env)
    assert result.exit_code == 0, result.output
    assert "unchanged: " in result.output
    assert "version 1" in result.output

    result = runner.invoke(app, ["features", "plan", str(second)], env=env)
    assert result.exit_code == 0, result.output
    assert "version 1 -> 2" in result.output
    assert "+ recently_purchased (new: backfill from the archive)" in result.output
    assert "~ recent_views (size changed: backfill from the archive)" in result.output
    assert "~ counts (description changed: compatible)" in result.output

    result = runner.invoke(app, ["features", "apply", str(second)], env=env)
    assert result.exit_code == 0, result.output
    assert "registered version 2" in result.output
    assert "backfilling: recent_views, recently_purchased" in result.output

    result = runner.invoke(app, ["features", "status", "--json"], env=env)
    doc = json.loads(result.output)
    assert doc["version"] == 2
    assert doc["definitions"]["counts@1"]["state"] == "ready"
    assert doc["definitions"]["recently_purchased@2"]["state"] == "backfilling"

    result = runner.invoke(app, ["features", "apply", str(second)], env=env)
    assert "unchanged: nothing registered" in result.output

    # The archive is empty here: the run stages no user, and waits for no consumer.
    result = runner.invoke(app, ["features", "backfill", "--no-wait"], env=env)
    assert result.exit_code == 0, result.output
    assert "staged backfill-v2-" in result.output
    result = runner.invoke(app, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)["features"]
    assert status["version"] == 2
    [run] = status["backfills"]
    assert run["state"] == "staged"
    text = runner.invoke(app, ["status"], env=env).output
    assert "feature definitions: version 2" in text
    assert f"backfill {run['id']}: staged, 0/0 users" in text
    text = runner.invoke(app, ["features", "status"], env=env).output
    assert f"backfill {run['id']}: staged 0/0 users" in text
    assert "recently_purchased@2" in text
    assert run["features"] == {"recent_views": 2, "recently_purchased": 2}


def test_an_invalid_file_is_refused_and_nothing_registered(tmp_path: Path) -> None:
    env = {"HEADWATER_HOME": str(tmp_path / "hw")}
    bad = tmp_path / "bad.yaml"
    bad.write_text("features:\n  - {name: counts, kind: count, windows: [forever]}\n")
    result = runner.invoke(app, ["features", "apply", str(bad)], env=env)
    assert result.exit_code == 1
    assert "windows" in str(result.exception)
    result = runner.invoke(app, ["features", "status", "--json"], env=env)
    assert json.loads(result.output)["version"] == 1  # the built-in set, nothing else


def test_backfill_progress_is_a_gauge_of_the_gateway(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from headwater.application import Application
    from headwater.config import Settings
    from headwater.gateway.telemetry import BACKENDS
    from headwater.metrics import REGISTRY

    with Application(Settings.from_env(tmp_path / "hw")) as hw:
        hw.feature_versions.apply((*hw.configured_features(), PURCHASED))
        run = hw.feature_backfills.start("backfill", 2, {"recently_purchased": 2})
        hw.feature_backfills.update(run.id, progress={"users_done": 3, "users_total": 4})
        BACKENDS.sources.append(hw)
        try:
            computing = generate_latest(REGISTRY).decode()
            hw.feature_backfills.update(run.id, state="staged")
            staged = generate_latest(REGISTRY).decode()
        finally:
            BACKENDS.sources.remove(hw)
    labels = 'feature="recently_purchased",kind="backfill"'
    assert f'headwater_feature_backfill_progress{{{labels},state="computing"}} 0.75' in computing
    assert f'headwater_feature_backfill_progress{{{labels},state="staged"}} 1.0' in staged

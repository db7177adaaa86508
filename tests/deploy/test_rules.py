"""The shipped rules pass ``promtool``'s checks and unit tests, every alert is unit-tested,
and the rules and the Grafana dashboard read only metrics headwater exports or rules
record."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

import headwater.gateway.telemetry  # noqa: F401 - registers the collector read at scrape
from headwater.metrics import REGISTRY
from tests.deploy.conftest import DASHBOARD, RULE_TESTS, RULES, SCRAPE_CONFIG, rules

#: Series Prometheus itself provides.
PROMETHEUS_SERIES = {"ALERTS", "ALERTS_FOR_STATE", "up"}

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGES = re.compile(r"\[[^\]]*\]")
_NAME = re.compile(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*(?P<call>\s*\()?")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "Inf",
    "NaN",
}


def series_in(expr: str) -> set[str]:
    """The series names a PromQL expression reads (functions, labels and keywords aside)."""
    bare = _STRINGS.sub("", expr)
    bare = _MATCHERS.sub("", bare)
    bare = _GROUPING.sub("", bare)
    bare = _RANGES.sub("", bare)
    names = {m.group(0) for m in _NAME.finditer(bare) if m.group("call") is None}
    return names - _KEYWORDS


def exported_series() -> set[str]:
    """Every series name headwater's ``/metrics`` can show."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel, those inside rows included, rows aside."""
    found = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        found.extend(panel.get("panels", []))
        if panel["type"] != "row":
            found.append(panel)
    return found


def test_series_in_reads_metric_names_only() -> None:
    expr = (
        'sum by (producer) (rate(headwater_events_accepted_total{producer="web"}[5m])) '
        '/ on (producer) group_left max(x:y:z offset 5m) > 1e3 and time() - b{a="c d"}'
    )
    assert series_in(expr) == {"headwater_events_accepted_total", "x:y:z", "b"}


def test_promtool_checks_the_rules(promtool: str) -> None:
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_promtool_checks_the_shipped_scrape_configuration(promtool: str, tmp_path: Path) -> None:
    # As an operator installs it: the configuration, the rules and a key file side by side.
    shutil.copy(SCRAPE_CONFIG, tmp_path / "prometheus.yml")
    shutil.copy(RULES, tmp_path / RULES.name)
    (tmp_path / "headwater-operator.key").write_text("hwk_example")
    checked = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"


def test_promtool_unit_tests_of_the_rules_pass(promtool: str) -> None:
    files = sorted(RULE_TESTS.glob("*.yml"))
    assert files
    tested = subprocess.run(
        [promtool, "test", "rules", *map(str, files)], capture_output=True, text=True, check=False
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "FAILED" not in tested.stdout


def test_every_alert_is_unit_tested_firing() -> None:
    alerts = {r["alert"] for r in rules() if "alert" in r}
    fired: set[str] = set()
    for path in RULE_TESTS.glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    assert alerts
    assert alerts - fired == set(), "alerts no unit test sees firing"
    assert fired - alerts == set(), "unit tests of alerts that do not exist"


def test_every_alert_names_its_severity_and_summary() -> None:
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
            assert rule["alert"].startswith("Headwater"), rule["alert"]


def test_rules_read_only_exported_metrics_or_recorded_ones() -> None:
    known = exported_series() | PROMETHEUS_SERIES
    recorded: set[str] = set()
    for rule in rules():  # a rule reads the series recorded above it
        unknown = series_in(rule["expr"]) - known - recorded
        assert not unknown, f"{rule.get('record') or rule.get('alert')} reads {unknown}"
        if "record" in rule:
            recorded.add(rule["record"])


def test_dashboard_is_a_grafana_dashboard_on_a_prometheus_variable() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"]
    assert board["title"]
    assert isinstance(board["schemaVersion"], int)
    (variable,) = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    ids = [p["id"] for p in board["panels"]] + [
        p["id"] for row in board["panels"] for p in row.get("panels", [])
    ]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    boxes = []
    for panel in dashboard_panels() + [p for p in board["panels"] if p["type"] == "row"]:
        grid = panel["gridPos"]
        assert min(grid["w"], grid["h"], grid["x"], grid["y"]) >= 0, panel["title"]
        assert grid["w"] > 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        boxes.append((panel["title"], grid))
    for i, (title, a) in enumerate(boxes):
        for other, b in boxes[i + 1 :]:
            apart = (
                a["x"] + a["w"] <= b["x"]
                or b["x"] + b["w"] <= a["x"]
                or a["y"] + a["h"] <= b["y"]
                or b["y"] + b["h"] <= a["y"]
            )
            assert apart, f"panels {title!r} and {other!r} overlap"


def test_every_dashboard_panel_queries_metrics_that_exist(promtool: str, tmp_path: Path) -> None:
    known = exported_series() | PROMETHEUS_SERIES | {r["record"] for r in rules() if "record" in r}
    exprs = []
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for target in targets:
            expr = target["expr"]
            read = series_in(expr)
            assert read, f"{panel['title']}: {expr} reads no series"
            assert read <= known, f"{panel['title']} reads {read - known}"
            exprs.append(expr)
    # Prometheus's own parser accepts every query (as the expression of a rule).
    parsed = tmp_path / "dashboard-queries.yml"
    queries = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
    parsed.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": queries}]}))
    checked = subprocess.run(
        [promtool, "check", "rules", str(parsed)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

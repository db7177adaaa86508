"""The shipped Prometheus rules and Grafana dashboard, and the Debian binaries that test them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import IN_CI

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "headwater-rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests"
SCRAPE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "headwater.json"


def rules() -> list[dict[str, Any]]:
    """Every rule of the shipped rules file, recording and alerting, in file order."""
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def binary(name: str) -> str:
    """The path of a Prometheus binary; skip locally, fail under CI=true, when missing."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/local/bin/{name}") if Path(p).exists()), None
    )
    if found is None:
        message = f"{name} is not installed (apt-get install prometheus)"
        if IN_CI:
            pytest.fail(f"{message}; CI requires it", pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture
def promtool() -> str:
    return binary("promtool")


@pytest.fixture
def prometheus() -> str:
    return binary("prometheus")

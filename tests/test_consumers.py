"""The registry of consumers is the one list: every consumer builds from it, runs as its
own process from it, and what ``up``, ``bus lag``, the orchestrator and the docs show
comes from it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from headwater.application import CONSUMERS, Application, expected_participants
from headwater.cli import app as cli_app
from headwater.config import Settings
from headwater.runtime import Consumer
from headwater.supervisor import COMPONENTS

DOCS = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("HEADWATER_BUS_URL", "HEADWATER_ONLINE_URL", "HEADWATER_CONTROL_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("HEADWATER_LAG_GROUPS", raising=False)
    return tmp_path / "hw"


@pytest.mark.parametrize("spec", CONSUMERS, ids=lambda s: s.name)
def test_every_consumer_builds_from_the_registry(home: Path, spec: object) -> None:
    from headwater.application import ConsumerSpec

    assert isinstance(spec, ConsumerSpec)
    with Application(Settings.from_env(home)) as app:
        runtime = spec.build(app)
        try:
            assert isinstance(runtime.handler, Consumer)
            assert runtime.group == spec.group
            # The stores the registry declares are the ones the consumer answers for.
            assert tuple(p.name for p in runtime.participants) == spec.participants
            registered = {p.name for p in app.ledger.participants()}
            assert set(spec.participants) <= registered
        finally:
            runtime.close()


def test_names_groups_and_participants_are_unique() -> None:
    names = [s.name for s in CONSUMERS]
    groups = [s.group for s in CONSUMERS]
    assert len(set(names)) == len(names)
    assert len(set(groups)) == len(groups)
    assert len(set(expected_participants())) == len(expected_participants())


def test_every_consumer_runs_as_its_own_process(home: Path) -> None:
    env = {**os.environ, "HEADWATER_HOME": str(home)}
    for spec in CONSUMERS:
        done = subprocess.run(
            [sys.executable, "-m", "headwater", *spec.command, "--until-idle"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (spec.name, done.stderr[-2000:])
    with Application(Settings.from_env(home)) as app:
        registered = {p.name for p in app.ledger.participants()}
    assert registered == set(expected_participants())


def test_what_is_derived_from_the_registry(home: Path) -> None:
    with Application(Settings.from_env(home)) as app:
        assert app.lag_groups == tuple(s.group for s in CONSUMERS)
        assert app.orchestrator.expected == expected_participants()
    # up --processes starts every consumer, then the orchestrator.
    assert [n for n in COMPONENTS if n != "orchestrator"] == [s.name for s in CONSUMERS]
    assert all(COMPONENTS[s.name] == s.command for s in CONSUMERS)
    # One `headwater consume` command per consumer, and nothing else.
    consume = typer.main.get_group(cli_app).commands["consume"]
    assert list(consume.commands) == [s.name for s in CONSUMERS]  # type: ignore[attr-defined]
    # `headwater bus lag` without a group reports every consumer's group.
    lag = CliRunner().invoke(cli_app, ["bus", "lag", "--home", str(home)])
    assert lag.exit_code == 0, lag.output
    assert re.findall(r"^group (\S+)$", lag.output, flags=re.MULTILINE) == [
        s.group for s in CONSUMERS
    ]


def test_the_docs_table_of_consumers_is_the_registry() -> None:
    text = DOCS.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `headwater consume ([\w-]+)` \| `([\w-]+)` \| ([^|]+) \|", text, re.M)
    assert rows, "docs/architecture.md has no table of consumers"
    documented = [
        (name, group, tuple(re.findall(r"`([\w-]+)`", stores))) for name, group, stores in rows
    ]
    assert documented == [(s.name, s.group, s.participants) for s in CONSUMERS]


def test_status_lists_every_instance_with_its_partitions_and_generations(home: Path) -> None:
    with Application(Settings.from_env(home)) as app:
        first, second = app.consumer("features"), app.consumer("features")
        deadline = time.monotonic() + 20
        while True:  # until the group's membership settled (heartbeats every 0.5 s)
            first.step()
            second.step()
            a, b = set(first.membership.held), set(second.membership.held)
            if a and b and a.isdisjoint(b) and len(a | b) == 8:
                break
            assert time.monotonic() < deadline, (a, b)
        first._beat(force=True)
        second._beat(force=True)
        doc = app.status()
        (features,) = [g for g in doc["groups"] if g["group"] == "features"]  # type: ignore[attr-defined]
        members = {i["member"]: i for i in features["instances"]}
        assert set(members) == {first.member, second.member}
        held = [set(i["partitions"]) for i in members.values()]
        assert held[0].isdisjoint(held[1]), "the group split the partitions"
        assert all(g >= 1 for i in members.values() for g in i["partitions"].values())
        shown = CliRunner().invoke(cli_app, ["status", "--home", str(home)])
        assert shown.exit_code == 0, shown.output
        assert first.member in shown.output
        first.close()
        assert first.member not in app.status()["groups"][0]["instances"]  # type: ignore[index]
        second.close()

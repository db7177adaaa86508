"""The headwater CLI: contracts check/apply/list and the demo report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from headwater.cli import app
from tests._live import free_port, wait_healthy

runner = CliRunner()

RATING_V2 = """
team: reviews
event_types:
  rating:
    surfaces: [web, ios, android, reviews, email]
    item: true
    freshness_budget: 10m
    payload:
      rating: {type: int, required: true, min: 1, max: 5}
      text: {type: string, max_length: 2000}
      verified_purchase: {type: bool}
      tags:
        type: list
        items: enum
        values: [quality, price, delivery, fit, service]
        max_items: 5
      helpful_votes: {type: int, min: 0}
"""

RATING_BROKEN = """
team: reviews
event_types:
  rating:
    surfaces: [web, reviews]
    item: true
    payload:
      rating: {type: float, required: true, min: 1, max: 5}
      verified_purchase: {type: bool, required: true}
"""


def test_contracts_apply_check_list(tmp_path: Path) -> None:
    home = str(tmp_path / "hw")
    result = runner.invoke(app, ["contracts", "apply", "--home", home])
    assert result.exit_code == 0, result.output
    assert "+ rating (new, v1)" in result.output

    proposal = tmp_path / "reviews.yaml"
    proposal.write_text(RATING_V2)
    check = runner.invoke(app, ["contracts", "check", str(proposal), "--home", home, "--partial"])
    assert check.exit_code == 0, check.output
    assert "~ rating (new version v2)" in check.output

    applied = runner.invoke(app, ["contracts", "apply", str(proposal), "--home", home, "--partial"])
    assert applied.exit_code == 0, applied.output
    listed = runner.invoke(app, ["contracts", "list", "--home", home, "--json"])
    doc = json.loads(listed.output)
    assert [v["version"] for v in doc["rating"]] == [1, 2]

    proposal.write_text(RATING_BROKEN)
    refused = runner.invoke(app, ["contracts", "check", str(proposal), "--home", home, "--partial"])
    assert refused.exit_code == 1
    for rule in ("type_changed", "made_required", "field_removed", "surface_removed"):
        assert rule in refused.output
    assert "(v2 -> v3)" in refused.output
    assert "(v1 -> v3)" in refused.output


def test_bad_definition_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.yaml"
    bad.write_text("team: x\nevent_types:\n  Bad-Name: {surfaces: [web]}\n")
    result = runner.invoke(app, ["contracts", "check", str(bad), "--home", str(tmp_path)])
    assert result.exit_code != 0
    assert "lower_snake_case" in str(result.exception) + result.output


def test_demo_runs_the_stack_and_prints_fresh_features(tmp_path: Path) -> None:
    from tests._live import free_port

    result = runner.invoke(
        app,
        [
            "demo",
            "--home",
            str(tmp_path / "demo"),
            "--seconds",
            "3",
            "--rate",
            "1500",
            "--port",
            str(free_port()),
        ],
    )
    assert result.exit_code == 0, result.output
    for team in ("web", "ios", "android", "search", "checkout", "reviews"):
        assert f"team-{team}" not in result.output  # threads finished quietly
    assert "features of demo-user-42" in result.output
    assert '"recently_viewed"' in result.output
    assert "i000303" in result.output
    assert "rejections by reason" in result.output
    assert "fresh (within every feature's freshness budget)" in result.output
    assert "contracts (the reviews team's schema owners)" in result.output
    assert "registered rating v2" in result.output
    # The demo's traffic is generated in memory: its home holds the stores' files (each
    # reached by erasure) and the erasure key, no file of generated events.
    home = tmp_path / "demo"
    stores = ("archive/", "bus.db", "control.db", "dedupe.db", "online.db", "ratelimit.db")
    files = [str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()]
    assert "online.db" in files
    assert [f for f in files if not f.startswith(stores) and f != "erasure.key"] == []


def test_dlq_list_and_replay(tmp_path: Path) -> None:
    from headwater.bus import Record, open_bus
    from headwater.bus.dead_letters import DeadLetterStore
    from headwater.control import open_control_database

    home = str(tmp_path)
    db = open_control_database(f"sqlite:///{tmp_path / 'control.db'}")
    store = DeadLetterStore(db)
    store.put("features", Record(0, 5, "u1", "signal", b"payload", 1), "ValueError: bad", 3)
    listed = runner.invoke(app, ["dlq", "list", "--home", home])
    assert "features:0:5" in listed.output
    assert "ValueError: bad" in listed.output
    replayed = runner.invoke(app, ["dlq", "replay", "features:0:5", "--home", home])
    assert replayed.exit_code == 0, replayed.output
    assert store.count() == 0
    bus = open_bus(f"sqlite:///{tmp_path / 'bus.db'}")
    consumer = bus.consumer("check")
    records = consumer.poll(10, 1.0)
    consumer.close()
    bus.close()
    db.close()
    assert [(r.key, r.value) for r in records] == [("u1", b"payload")]
    lag = runner.invoke(app, ["bus", "lag", "check", "--home", home])
    assert "total lag: 1 events" in lag.output
    missing = runner.invoke(app, ["dlq", "replay", "features:9:9", "--home", home])
    assert missing.exit_code == 1


def test_delete_show_list_export(tmp_path: Path) -> None:
    from headwater.application import Application
    from headwater.config import Settings

    home = str(tmp_path / "hw")
    # A running participant registers itself; only the platform one runs here, so the
    # other consumers' stores stay outstanding.
    hw = Application(Settings.from_env(home))
    runtime = hw.consumer("platform-erasure")
    # A feature row of the user: its store (online-features) has not erased it yet.
    hw.online.put("user", {"u-77": b"row of u-77"})
    created = runner.invoke(
        app, ["delete", "u-77", "--home", home, "--basis", "gdpr-art17", "--reference", "T-77"]
    )
    assert created.exit_code == 0, created.output
    request_id = created.output.split("follow it: headwater deletions show ")[1].strip()
    assert "bus-log" in created.output
    assert "outstanding" in created.output
    while runtime.step():
        pass
    runtime.close()
    hw.close()
    shown = runner.invoke(app, ["deletions", "show", request_id, "--home", home, "--json"])
    stores = {s["participant"]: s["status"] for s in json.loads(shown.output)["stores"]}
    assert stores == {
        "bus-log": "confirmed",
        "dead-letters": "confirmed",
        "idempotency-window": "confirmed",
        "online-features": "pending",
        "archive": "pending",
        "batch-derived": "pending",
    }
    listed = runner.invoke(app, ["deletions", "list", "--home", home])
    assert request_id in listed.output
    assert "3/6 confirmed" in listed.output
    out = tmp_path / "audit.json"
    exported = runner.invoke(
        app, ["deletions", "export", request_id, "--home", home, "--out", str(out)]
    )
    assert exported.exit_code == 0
    record = json.loads(out.read_text())
    assert record["document"] == "headwater erasure record"
    assert record["request"]["request_id"] == request_id
    assert {s["store"] for s in record["stores"]} >= {"online-features", "archive"}
    assert "u-77" not in out.read_text()
    # Residue where a store has not erased yet: exit 1; the stores that confirmed are clean.
    verified = runner.invoke(app, ["deletions", "verify", request_id, "--home", home])
    assert verified.exit_code == 1, verified.output
    states = {line.split()[0]: line.split()[1] for line in verified.output.splitlines()}
    assert states["online-features"] == "RESIDUE"
    assert states["bus-log"] == "clean"
    assert states["dead-letters"] == "clean"
    assert "u-77" not in verified.output
    assert (
        "u-77" not in runner.invoke(app, ["deletions", "show", request_id, "--home", home]).output
    )


def test_each_erasure_participant_runs_on_its_own(tmp_path: Path) -> None:
    # A deployment of separate processes needs every participant as a command: each
    # registers its stores with the erasure ledger when it starts.
    from headwater.config import Settings
    from headwater.control import open_control_database
    from headwater.erasure.ledger import ErasureLedger
    from headwater.erasure.subject import SubjectSealer

    home = tmp_path / "hw"
    for command in ("features", "platform-erasure", "batch-erasure"):
        result = runner.invoke(app, ["consume", command, "--home", str(home), "--until-idle"])
        assert result.exit_code == 0, result.output
    db = open_control_database(Settings.from_env(home).control_url)
    names = {p.name for p in ErasureLedger(db, SubjectSealer(b"k" * 32)).participants()}
    db.close()
    assert {
        "online-features",
        "bus-log",
        "dead-letters",
        "idempotency-window",
        "batch-derived",
    } <= names


def test_the_demo_reports_a_refused_call_with_its_problem() -> None:
    from headwater.cli.demo import _expect
    from headwater.errors import HeadwaterError
    from tests._gateway_fixtures import problem_answer

    refused = problem_answer(503, "no-erasure-participants", "start the consumers first")
    with pytest.raises(
        HeadwaterError,
        match="POST /v1/deletions: HTTP 503 no-erasure-participants: start the consumers first",
    ):
        _expect(refused, 202, "POST /v1/deletions")
    _expect(httpx.Response(202, json={"request_id": "er_1"}), 202, "POST /v1/deletions")


def _signal(event_type: str, n: int, **payload: object) -> dict[str, object]:
    from datetime import UTC, datetime

    return {
        "event_id": f"cli-{event_type}-{n}",
        "event_type": event_type,
        "user_id": "u1",
        "item_id": "i1",
        "surface": "web",
        "timestamp": datetime.now(UTC).isoformat(),
        "payload": payload,
    }


def test_producer_keys_are_scoped_to_their_team_and_revoked_keys_stop(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from headwater.application import Application
    from headwater.config import Settings
    from headwater.gateway.app import create_app
    from headwater.gateway.security import KEY_CACHE_S

    home = str(tmp_path / "hw")
    assert runner.invoke(app, ["contracts", "apply", "--home", home]).exit_code == 0
    made = runner.invoke(app, ["producers", "create", "web", "--home", home])
    assert made.exit_code == 0, made.output
    assert "scope:   the types web owns" in made.output
    web = made.output.split("API key: ", 1)[1].split()[0]
    # Every type is asked for by name, never by '*' ...
    star = runner.invoke(app, ["producers", "create", "web", "--event-types", "*", "--home", home])
    assert star.exit_code != 0
    assert "--all-event-types" in star.output
    every = runner.invoke(
        app, ["producers", "create", "search", "--all-event-types", "--quiet", "--home", home]
    )
    assert every.exit_code == 0, every.output
    everything = every.output.strip()
    # ... and the list shows it as *.
    listed = runner.invoke(app, ["producers", "list", "--home", home]).output.splitlines()
    assert len(listed) == 2, listed
    web_line = next(line for line in listed if "team:web" in line)
    search_line = next(line for line in listed if "team:search" in line)
    assert "types=*" not in web_line
    assert "types=* " in search_line
    doc = json.loads(runner.invoke(app, ["producers", "list", "--json", "--home", home]).output)
    web_id = next(k["key_id"] for k in doc if k["team"] == "web")

    hw = Application(Settings.from_env(Path(home)))
    try:
        with TestClient(create_app(hw)) as client:
            headers = {"Authorization": f"Bearer {web}"}
            assert client.post("/v1/signals", json=[_signal("view", 1)], headers=headers).is_success
            theirs = client.post(
                "/v1/signals", json=[_signal("rating", 1, rating=4)], headers=headers
            )
            assert theirs.status_code == 403, theirs.text
            assert "rating" in theirs.json()["detail"]
            star_headers = {"Authorization": f"Bearer {everything}"}
            rated = client.post(
                "/v1/signals", json=[_signal("rating", 2, rating=4)], headers=star_headers
            )
            assert rated.status_code == 200, rated.text
            # Revoked on the command line: the key stops working.
            revoked = runner.invoke(app, ["keys", "revoke", web_id, "--home", home])
            assert revoked.exit_code == 0, revoked.output
            assert f"revoked {web_id}" in revoked.output
            time.sleep(KEY_CACHE_S + 0.1)
            after = client.post("/v1/signals", json=[_signal("view", 2)], headers=headers)
            assert after.status_code == 401, after.text
            assert "revoked" in after.json()["detail"]
    finally:
        hw.close()
    listed = runner.invoke(app, ["producers", "list", "--revoked", "--home", home]).output
    assert "REVOKED" in next(line for line in listed.splitlines() if web_id in line)


def test_a_headwater_process_collects_young_garbage_less_often(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc

    import headwater.cli

    seen: list[tuple[int, ...]] = []
    monkeypatch.setattr(headwater.cli, "app", lambda: seen.append(gc.get_threshold()))
    before = gc.get_threshold()
    try:
        headwater.cli.main()
    finally:
        gc.set_threshold(*before)
    # The youngest generation waits for 20,000 allocations; the older ones keep their ratios.
    assert seen == [(20_000, *before[1:])]


def test_the_gateway_takes_what_it_built_to_start_out_of_the_collectors_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    import uvicorn

    frozen: list[int] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: frozen.append(gc.get_freeze_count()))
    gc.unfreeze()
    try:
        result = runner.invoke(app, ["serve", "--home", str(tmp_path / "hw"), "--port", "0"])
    finally:
        gc.unfreeze()
    assert result.exit_code == 0, result.output
    # The app, its connections and every module imported to start are frozen before the
    # server takes its first request: a full collection no longer walks them.
    assert len(frozen) == 1
    assert frozen[0] > 10_000


_SIGNALLED_ELSEWHERE = """
import signal, threading, time
from headwater.cli._common import wait_until_stopped

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())


def take_it():
    # The kernel may hand a process's SIGTERM to any of its threads: here, another one,
    # once the main thread waits.
    time.sleep(0.3)
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)


threading.Thread(target=take_it, daemon=True).start()
WAIT
print("stopped")
"""


@pytest.mark.parametrize(
    ("wait", "stops"),
    [("wait_until_stopped(stop)", True), ("stop.wait()", False)],
)
def test_a_command_stops_when_another_thread_takes_its_sigterm(wait: str, stops: bool) -> None:
    script = _SIGNALLED_ELSEWHERE.replace("WAIT", wait)
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=10
        )
    except subprocess.TimeoutExpired:
        # A wait without a timeout never runs the handler: what `up` did.
        assert not stops
    else:
        assert stops
        assert done.stdout.strip() == "stopped", done.stderr


def test_the_gateway_closes_its_application_on_sigterm(tmp_path: Path) -> None:
    """uvicorn shuts down on SIGTERM and then raises it again, which ends the process:
    ``headwater serve`` closes its application (bus, window, control plane) before that,
    and says so."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env["HEADWATER_HOME"] = str(tmp_path / "hw")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "headwater", "serve", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(port, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM  # the signal's own end, as uvicorn intends
    finally:
        if proc.poll() is None:
            proc.kill()
    assert '"msg":"gateway stopped"' in log.read_text()

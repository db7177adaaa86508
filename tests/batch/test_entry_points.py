"""Entry points over Settings: the CLI commands and the two erasure runtimes on a real bus."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headwater.application import Application
from headwater.batch import USER_BATCH
from headwater.bus import Message
from headwater.cli import archive as archive_cli
from headwater.cli import batch as batch_cli
from headwater.config import Settings
from headwater.contract.signal import encode_signal
from headwater.erasure.events import Confirmation, ErasureEvent, encode_erasure
from tests.archive._history import history, records

cli = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in (
        "HEADWATER_ONLINE_URL",
        "HEADWATER_BUS_URL",
        "HEADWATER_CONTROL_URL",
        "HEADWATER_ARCHIVE_URL",
        "HEADWATER_BATCH_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HEADWATER_ARCHIVE_RETENTION", "0")
    monkeypatch.setenv("HEADWATER_ARCHIVE_FLUSH_SECONDS", "0.2s")
    monkeypatch.setenv("HEADWATER_BATCH_COVIS_MIN_SUPPORT", "1")
    return tmp_path / "hw"


def test_batch_cli_runs_backfills_and_reports(home: Path) -> None:
    with Application(Settings.from_env(home)) as app:
        app.open_archive_consumer().handle(records(history(800, days=6)))
    out = cli.invoke(batch_cli.app, ["run", "--home", str(home), "--until", "2026-03-06"])
    assert out.exit_code == 0, out.output
    assert "6 day(s) to compute" in out.output
    assert "days 2026-03-01..2026-03-06 (6/6)" in out.output
    assert "user_batch:" in out.output
    assert "outputs as of 2026-03-07T00:00:00.000Z" in out.output
    out = cli.invoke(
        batch_cli.app,
        ["run", "--home", str(home), "--from", "2026-03-02", "--to", "2026-03-03", "--json"],
    )
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["kind"] == "backfill"
    assert report["days_computed"] == ["2026-03-02", "2026-03-03"]
    out = cli.invoke(batch_cli.app, ["status", "--home", str(home), "--json"])
    status = json.loads(out.output)
    assert status["as_of_day"] == "2026-03-06"
    assert status["computed_days"] == 6
    out = cli.invoke(batch_cli.app, ["status", "--home", str(home)])
    assert "outputs as of day: 2026-03-06" in out.output
    bad = cli.invoke(
        batch_cli.app, ["run", "--home", str(home), "--from", "2026-03-05", "--to", "2026-03-01"]
    )
    assert bad.exit_code != 0


def test_archive_cli_vacuum_and_erasure_status(home: Path) -> None:
    with Application(Settings.from_env(home)) as app:
        consumer = app.open_archive_consumer()
        consumer.handle(records(history(300, days=3)))
        event = ErasureEvent(request_id="r-cli", user_id="u001", requested_at=datetime.now(UTC))
        consumer.erase(event)
    out = cli.invoke(archive_cli.app, ["erasure", "r-cli", "--home", str(home), "--json"])
    doc = json.loads(out.output)
    assert doc["physically_removed_at"] == doc["erased_at"]  # files went with the DELETE
    assert doc["partitions"]
    out = cli.invoke(archive_cli.app, ["vacuum", "--home", str(home), "--retention", "0"])
    assert out.exit_code == 0
    assert "file(s) removed" in out.output
    missing = cli.invoke(archive_cli.app, ["erasure", "nope", "--home", str(home)])
    assert missing.exit_code == 1


def test_runtimes_archive_then_batch_participant_confirm(home: Path) -> None:
    settings = Settings.from_env(home)
    app = Application(settings)
    bus = app.bus
    sent = history(600, days=4)
    bus.publish([Message(s.user_id, encode_signal(s)) for s in sent])
    archive = app.consumer("archive")
    archive.run(install_signal_handlers=False, idle_exit=True)
    app.open_batch_runner().run(until=max(s.timestamp.date() for s in sent))
    store = app.online
    assert store.count(USER_BATCH, ["u001"]) == 1
    event = ErasureEvent(request_id="r-bus", user_id="u001", requested_at=datetime.now(UTC))
    bus.publish([Message("u001", encode_erasure(event), "erasure")])

    confirmations: list[Confirmation] = []
    participant = app.consumer("batch-erasure")
    participant.on_confirmation = confirmations.append
    participant.backoff = (0.05, 0.1)
    thread = threading.Thread(
        target=participant.run, kwargs={"install_signal_handlers": False}, daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while participant.stats.unavailable_waits == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert participant.stats.unavailable_waits > 0, "it waits for the archive first"
    assert confirmations == []
    archive = app.consumer("archive")
    archive.on_confirmation = confirmations.append
    archive.run(install_signal_handlers=False, idle_exit=True)
    while len(confirmations) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    participant.stop()
    thread.join(10)
    assert [c.participant for c in confirmations] == ["archive", "batch-derived"]
    assert (
        confirmations[1].evidence["partitions_recomputed"]
        == confirmations[0].evidence["partitions"]
    )
    assert store.count(USER_BATCH, ["u001"]) == 0
    app.close()

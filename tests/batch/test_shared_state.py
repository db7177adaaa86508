"""The batch where the deployment shares it: state and lock in the control plane, outputs
beside the archive. A host deployed on a fresh working directory sees what the others
computed, erases from it, and a second run on any host is refused with the holder's name.
Each test runs on the SQLite and the PostgreSQL control plane."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headwater.application import Application
from headwater.batch import USER_BATCH, BatchErasureParticipant
from headwater.batch.derived import OUTPUTS_DIR
from headwater.cli import batch as batch_cli
from headwater.config import Settings
from headwater.contract.signal import Signal
from headwater.erasure.events import ErasureEvent
from headwater.errors import BatchRunningError
from tests.archive._history import START, history, records, signal

cli = CliRunner()
VICTIM = "victim-5f3a9c"
UNTIL = "2026-03-08"


def _victim_history() -> list[Signal]:
    out = []
    for n, d in enumerate((1, 3, 6)):
        day = START + timedelta(days=d)
        out += [
            signal(70_000 + 10 * n, "view", VICTIM, "i-rare-a", day, minute=5),
            signal(70_001 + 10 * n, "purchase", VICTIM, "i000", day, minute=6),
        ]
    return out


VICTIM_DAYS = sorted({s.timestamp.date().isoformat() for s in _victim_history()})


@pytest.fixture
def shared(tmp_path: Path, control_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What hosts share: the control plane, the archive and the online store."""
    root = tmp_path / "shared"
    monkeypatch.setenv("HEADWATER_CONTROL_URL", control_url)
    monkeypatch.setenv("HEADWATER_ERASURE_KEY", "ab" * 32)  # every host shares it
    monkeypatch.setenv("HEADWATER_ARCHIVE_URL", str(root / "archive"))
    monkeypatch.setenv("HEADWATER_ONLINE_URL", f"sqlite:///{root / 'online.db'}")
    monkeypatch.setenv("HEADWATER_BUS_URL", f"sqlite:///{root / 'bus.db'}")
    monkeypatch.delenv("HEADWATER_BATCH_DIR", raising=False)
    monkeypatch.setenv("HEADWATER_ARCHIVE_RETENTION", "0")
    monkeypatch.setenv("HEADWATER_BATCH_COVIS_MIN_SUPPORT", "1")
    root.mkdir()
    with Application(Settings.from_env(tmp_path / "host-a")) as app:
        app.open_archive_consumer().handle(records(history(600, days=8) + _victim_history()))
    return root


def _files_holding(root: Path, needle: bytes) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes())


def test_a_redeployed_host_sees_the_computed_days_and_erases_from_them(
    tmp_path: Path, shared: Path
) -> None:
    host_a, host_b = tmp_path / "host-a", tmp_path / "host-b"
    out = cli.invoke(batch_cli.app, ["run", "--home", str(host_a), "--until", UNTIL])
    assert out.exit_code == 0, out.output
    assert "8 day(s) to compute" in out.output
    outputs = shared / "archive" / OUTPUTS_DIR
    assert _files_holding(outputs, VICTIM.encode()), "the day aggregates hold the user"
    assert not (host_a / "batch").exists(), "nothing of the batch in the working directory"

    # A fresh working directory, the same control plane and archive.
    out = cli.invoke(batch_cli.app, ["status", "--home", str(host_b), "--json"])
    assert out.exit_code == 0, out.output
    status = json.loads(out.output)
    assert status["as_of_day"] == UNTIL
    assert status["computed_days"] == 8
    assert status["not_computed"] == []
    assert status["outputs"] == f"{shared / 'archive'}/{OUTPUTS_DIR}"
    assert status["runs"][0]["status"] == "ok"
    out = cli.invoke(batch_cli.app, ["status", "--home", str(host_b)])
    assert f"outputs as of day: {UNTIL}" in out.output

    # The erasure, run from host B: the right days recomputed, the old files gone.
    event = ErasureEvent(request_id="r-redeploy", user_id=VICTIM, requested_at=datetime.now(UTC))
    with Application(Settings.from_env(host_b)) as app:
        assert app.online.count(USER_BATCH, [VICTIM]) == 1
        archive = app.open_archive_consumer()
        archive.erase(event)
        participant = BatchErasureParticipant(app.open_batch_runner(), archive.ledger)
        (conf,) = participant.erase(event)
        assert app.online.count(USER_BATCH, [VICTIM]) == 0
    assert conf.ok
    assert conf.rows_remaining == 0
    assert conf.store == f"{shared / 'archive'}/{OUTPUTS_DIR}"
    assert conf.evidence["partitions_recomputed"] == VICTIM_DAYS
    assert conf.rows_removed == 2 * 3 + 1  # two user-item rows a day on 3 days + the user row
    removed = conf.evidence["files_removed"]
    assert removed, "the confirmation names the superseded files"
    assert {f.split("/")[1][5:] for f in removed} == set(VICTIM_DAYS)
    assert all(not (outputs / f).exists() for f in removed)
    assert _files_holding(outputs, VICTIM.encode()) == []
    for home in (host_a, host_b):
        assert _files_holding(home, VICTIM.encode()) == []

    # Host A's next run agrees: nothing to recompute, nothing brought back.
    out = cli.invoke(batch_cli.app, ["run", "--home", str(host_a), "--until", UNTIL, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["days_computed"] == []


def test_two_runs_at_once_one_runs_the_other_says_who_holds_it(
    tmp_path: Path, shared: Path
) -> None:
    entered, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_progress(line: str) -> None:
        if "to compute" in line:  # inside the lock, before any day is computed
            entered.set()
            release.wait(30)

    def first() -> None:
        try:
            with Application(Settings.from_env(tmp_path / "host-a")) as app:
                app.open_batch_runner().run(
                    until=datetime.fromisoformat(UNTIL).date(), progress=slow_progress
                )
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert entered.wait(30)
        out = cli.invoke(batch_cli.app, ["run", "--home", str(tmp_path / "host-b")])
        assert out.exit_code == 1
        assert "not started: the batch is already running: held by" in out.output
        assert "(pid" in out.output
        assert "nightly run) since 20" in out.output
        status = cli.invoke(batch_cli.app, ["status", "--home", str(tmp_path / "host-b")])
        assert "running now: nightly run on" in status.output
        with (
            Application(Settings.from_env(tmp_path / "host-c")) as app,
            pytest.raises(BatchRunningError, match="already running"),
        ):
            app.open_batch_runner().run()
    finally:
        release.set()
        thread.join(60)
    assert errors == []
    out = cli.invoke(
        batch_cli.app, ["run", "--home", str(tmp_path / "host-b"), "--until", UNTIL, "--json"]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["days_computed"] == []


def test_an_old_local_batch_directory_is_removed_and_the_first_run_recomputes(
    tmp_path: Path, shared: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    del shared
    legacy = tmp_path / "old-batch"
    day = legacy / "derived" / "user_item_day" / "date=2026-03-02"
    day.mkdir(parents=True)
    (day / "old.parquet").write_bytes(b"PAR1 " + VICTIM.encode())
    (legacy / "state.db").write_bytes(b"SQLite format 3\0")
    monkeypatch.setenv("HEADWATER_BATCH_DIR", str(legacy))
    out = cli.invoke(batch_cli.app, ["run", "--home", str(tmp_path / "host-a"), "--until", UNTIL])
    assert out.exit_code == 0, out.output
    assert "8 day(s) to compute" in out.output
    assert not legacy.exists()
    assert "HEADWATER_BATCH_DIR is no longer used" in caplog.text
    # The default place of the old directory, under the home, goes the same way.
    monkeypatch.delenv("HEADWATER_BATCH_DIR")
    home = tmp_path / "host-b"
    (home / "batch" / "derived").mkdir(parents=True)
    (home / "batch" / "state.db").write_bytes(VICTIM.encode())
    out = cli.invoke(batch_cli.app, ["run", "--home", str(home), "--until", UNTIL])
    assert out.exit_code == 0, out.output
    assert not (home / "batch").exists()

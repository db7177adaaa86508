"""``headwater features history``: a training set from a labels file, through the CLI."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

import headwater
from headwater.application import Application
from headwater.archive.schema import signals_to_arrow
from headwater.cli import app
from headwater.config import Settings
from headwater.contract.signal import Signal

runner = CliRunner()
BASE = datetime(2026, 3, 1, tzinfo=UTC)


def test_history_writes_the_training_set_and_leaves_out_erased_users(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    with Application(Settings.from_env(home)) as hw:
        signals = [
            Signal(
                event_id=f"e{n}",
                event_type=("view", "click")[n % 2],
                user_id=("alice", "bob", "erin")[n % 3],
                surface="home",
                timestamp=BASE + timedelta(minutes=10 * n),
                item_id=f"i{n}",
                received_at=BASE + timedelta(minutes=10 * n),
            )
            for n in range(12)
        ]
        hw.open_archive_table().append(signals_to_arrow(signals, hw.hasher))
        # erin's erasure is recorded (her tombstone); her archived rows are left in place
        # here, so only the tombstone keeps her out of the training set.
        hw.ledger.create(
            request_id="req-1",
            subject_hash=hw.hasher("erin"),
            user_id="erin",
            legal_basis="gdpr-art17",
            received_at=BASE + timedelta(days=1),
            deadline=BASE + timedelta(days=30),
            participants=[],
        )
        # A nightly run over the archive's one day: it completes now, so only a label
        # timestamped after now gets its user rows.
        run = hw.open_batch_runner().run(until=date(2026, 3, 1))
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "user_id,timestamp,item_id,clicked\n"
        "alice,2026-03-01T00:35:00Z,i3,1\n"
        "erin,2026-03-01T01:00:00Z,i5,0\n"
        "bob,2026-03-01T02:00:00Z,i4,1\n"
        "carol,2026-03-01T02:00:00Z,i4,0\n"
        "alice,2099-01-01T00:00:00Z,i9,0\n"
    )
    out = tmp_path / "train" / "set.parquet"

    result = runner.invoke(
        app, ["features", "history", str(labels), "--out", str(out), "--home", home]
    )

    assert result.exit_code == 0, result.output
    assert "4 row(s) written" in result.output
    assert "left out: 1 label(s) of 1 erased user(s)" in result.output
    table = pq.read_table(out)
    assert table.column("user_id").to_pylist() == ["alice", "alice", "bob", "carol"]
    assert table.column("clicked").to_pylist() == [1, 0, 1, 0]
    counts = [json.loads(c) for c in table.column("counts").to_pylist()]
    # alice: e0 (view, 00:00), e3 (click, 00:30), then all four of hers; bob: e1, e4, e7,
    # e10 up to 01:40.
    assert counts == [
        {"view": 1, "click": 1},
        {"view": 2, "click": 2},
        {"click": 2, "view": 2},
        {},
    ]
    assert table.column("batch_run").to_pylist() == [None, run.run_id, None, None]
    batch = json.loads(table.column("batch").to_pylist()[1])
    assert batch["as_of"] == run.as_of == "2026-03-02T00:00:00.000Z"
    assert batch["active_days_90d"] == 1
    assert b"erin" not in out.read_bytes()

    as_json = runner.invoke(
        app, ["features", "history", str(labels), "--out", str(out), "--home", home, "--json"]
    )
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.output)
    assert (report["labels"], report["rows"], report["erased_labels"]) == (5, 4, 1)

    # The same through the Python function, as an Arrow table.
    same = headwater.historical_features(labels, settings=Settings.from_env(home))
    assert same.to_pylist() == table.to_pylist()

    wrong = runner.invoke(
        app, ["features", "history", str(labels), "--out", str(tmp_path / "x.csv"), "--home", home]
    )
    assert wrong.exit_code != 0
    assert "expected a .parquet file" in wrong.output

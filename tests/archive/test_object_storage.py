"""The archive and the batch on object storage: an S3 API served by moto in its own process.

Skipped when moto is not installed (``pip install 'moto[server]'``).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from headwater.archive import ArchiveConsumer, ArchiveTable, ErasureLedger
from headwater.batch import USER_BATCH, BatchErasureParticipant, BatchRunner
from headwater.control import open_control_database
from headwater.erasure.events import ErasureEvent
from headwater.online import open_online_store
from tests.archive._history import SUBJECT, history, records
from tests.batch.conftest import UNTIL, small_settings

pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Its own process: deltalake holds the GIL while it waits on the network.
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                server.wait()
                pytest.fail("moto server did not start")
            time.sleep(0.1)
    yield endpoint
    server.terminate()
    server.wait(10)


@pytest.fixture
def s3_url(s3_endpoint: str) -> tuple[str, dict[str, str]]:
    bucket = f"hw-{uuid.uuid4().hex[:12]}"
    urllib.request.urlopen(urllib.request.Request(f"{s3_endpoint}/{bucket}", method="PUT"))
    options = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",  # one writer per table in this test
    }
    return f"s3://{bucket}/headwater", options


def test_archive_batch_and_erasure_on_s3(
    s3_url: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, options = s3_url
    archive = ArchiveConsumer(
        ArchiveTable(url, storage_options=options),
        ErasureLedger(url, storage_options=options),
        SUBJECT,
        retention_hours=0,
        vacuum_interval_s=None,
    )
    recs = records(history(600, days=6))
    archive.handle(recs)
    archive.handle(recs)  # a replay adds nothing
    assert archive.table.remote
    assert archive.table.uri == f"{url}/signals"
    assert archive.table.read(["event_id"]).num_rows == 600
    assert all(f.startswith("s3://") for d in archive.table.days().values() for f in d.files)

    store = open_online_store(f"sqlite:///{tmp_path / 'online.db'}")
    control = open_control_database(f"sqlite:///{tmp_path / 'control.db'}")
    runner = BatchRunner(archive.table, store, small_settings(), control)
    report = runner.run(until=UNTIL)
    assert len(report.days_computed) == 6
    assert store.count(USER_BATCH, ["u001"]) == 1
    # The day aggregates are on the archive's object storage, not on this host.
    assert runner.derived.remote
    assert runner.derived.url == f"{url}/_batch"
    assert len(runner.derived.days()) == 6

    event = ErasureEvent(request_id="s3-req", user_id="u001", requested_at=datetime.now(UTC))
    (conf,) = archive.erase(event)
    assert conf.ok
    assert conf.rows_removed > 0
    assert conf.evidence["files_removed"] > 0
    (derived,) = BatchErasureParticipant(runner, archive.ledger).erase(event)
    assert derived.ok
    assert derived.evidence["partitions_recomputed"] == conf.evidence["partitions"]
    removed = derived.evidence["files_removed"]
    assert removed
    assert not set(removed) & set(runner.derived.all_files()), "superseded files deleted"
    assert store.count(USER_BATCH, ["u001"]) == 0
    assert "u001" not in set(archive.table.read(["user_id"]).column("user_id").to_pylist())
    runner.close()
    store.close()

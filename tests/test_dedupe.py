"""The idempotency window over both backends: remember, seen, and erasure of users."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.dedupe import open_idempotency_window
from headwater.dedupe.base import IdempotencyWindow
from tests.conftest import server_url


@pytest.fixture(params=["sqlite", "redis"])
def window(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IdempotencyWindow]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'dedupe.db'}"
    else:
        url = f"{server_url('redis')}?prefix=hwtest-{uuid.uuid4().hex[:8]}"
    w = open_idempotency_window(url, window_s=3600)
    yield w
    w.erase_users([f"u{i}" for i in range(5)])
    w.close()


def test_erase_users_removes_each_users_entries_and_no_one_elses(
    window: IdempotencyWindow,
) -> None:
    window.remember([(f"e{i}", f"u{i % 5}") for i in range(50)])
    assert window.seen(["e0", "e1", "missing"]) == {"e0", "e1"}
    held = window.count_users(["u0", "u1", "nobody"])
    # Redis also counts the user's index of ids, an entry that names the user too.
    assert held["u0"] >= 10
    assert held["u1"] >= 10
    assert held["nobody"] == 0
    assert window.erase_users(["u0", "u1", "u0", "nobody"]) == {"u0": 10, "u1": 10, "nobody": 0}
    assert window.count_users(["u0", "u1"]) == {"u0": 0, "u1": 0}
    assert window.count_user("u2") >= 10
    assert window.seen(["e0", "e1", "e2"]) == {"e2"}
    assert window.erase_user("u2") == 10
    assert window.count_user("u2") == 0

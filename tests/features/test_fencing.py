"""A feature consumer that lost its partitions cannot write them: its batch is refused
atomically with the write, dropped, and read again by whoever holds the partition."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from headwater.application import Application
from headwater.bus import Message
from headwater.config import Settings
from headwater.contract.signal import Signal, encode_signal
from headwater.features.consumer import USER_NAMESPACE


def _publish(app: Application, start: int, n: int) -> None:
    now = datetime.now(UTC)
    app.bus.publish(
        [
            Message(
                "ann",
                encode_signal(
                    Signal(
                        event_id=f"e{i}",
                        event_type="view",
                        user_id="ann",
                        surface="web",
                        timestamp=now,
                        item_id="i1",
                        received_at=now,
                    )
                ),
            )
            for i in range(start, start + n)
        ]
    )


def _views(app: Application) -> int:
    row = app.online.get(USER_NAMESPACE, ["ann"]).get("ann")
    state = app.new_feature_engine().decode(row)
    return int(state.get("counts", {}).get("view", 0))


def test_a_fenced_owner_drops_its_batch_and_rejoins(tmp_path: Path) -> None:
    app = Application(Settings.from_env(tmp_path / "hw"))
    app.register_shipped_contracts()
    old = app.consumer("features")
    _publish(app, 0, 10)
    while old.step():
        pass
    assert _views(app) == 10
    held = dict(old.membership.held)
    assert held, "the member claimed what the bus assigned it"
    # Meanwhile another member claims every partition (a rebalance the old owner has not
    # noticed yet), and more events arrive.
    app.online.claim("features", sorted(held))
    _publish(app, 10, 5)
    assert old.step() == 0
    assert old.stats.fenced_batches == 1
    assert _views(app) == 10, "nothing of the fenced batch was written"
    assert old.membership.held == {}, "it let go of everything and rejoined"
    # Holding the partitions again (a newer generation), it reads the batch again.
    while old.step():
        pass
    assert _views(app) == 15
    assert all(g > held[p] + 1 for p, g in old.membership.held.items())
    old.close()
    app.close()

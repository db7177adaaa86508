"""End to end: the embedded stack runs with traffic; a new features version adds a feature
and changes another's window; the backfill from the archive is handed over to the
running stream. Every user's values then equal a computation from scratch over all of
the user's signals: nothing lost or counted twice across the hand-over."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from headwater.application import Application
from headwater.bus import Message
from headwater.config import Settings
from headwater.contract.signal import Signal, encode_signal
from headwater.features.backfills import RunKind
from headwater.features.engine import FeatureEngine
from headwater.features.spec import DEFAULT_FEATURES, FeatureSpec
from headwater.features.versions import USER_NAMESPACE
from headwater.runtime import ConsumerRuntime
from tests.conftest import server_url

USERS = 150
PURCHASED = FeatureSpec(
    name="recently_purchased", kind="recent_items", event_types=("purchase",), size=5
)
VERSION_2 = (
    *(
        msgspec.structs.replace(s, windows_s=(1800.0, 86_400.0)) if s.name == "window_counts" else s
        for s in DEFAULT_FEATURES
    ),
    PURCHASED,
)


class Traffic:
    """Publishes signals of many users until stopped; remembers every one, in bus order."""

    def __init__(self, hw: Application) -> None:
        self.bus = hw.open_bus()
        self.sent: list[Signal] = []
        self.stop = threading.Event()
        self.rng = random.Random(19)
        self.start = datetime.now(UTC) - timedelta(hours=3)
        self.thread = threading.Thread(target=self.run, daemon=True)

    def batch(self, n: int) -> None:
        out = []
        for _ in range(n):
            i = len(self.sent)
            etype = self.rng.choice(["view", "view", "click", "purchase", "save"])
            sig = Signal(
                event_id=f"e{i}",
                event_type=etype,
                user_id=f"u{self.rng.randrange(USERS)}",
                surface=self.rng.choice(["web", "ios"]),
                # Strictly increasing: every user's events arrive in their time order.
                timestamp=self.start + timedelta(milliseconds=50 * i),
                item_id=f"i{self.rng.randrange(300)}",
                payload={"action": "add"} if etype == "save" else {},
                received_at=datetime.now(UTC),
            )
            self.sent.append(sig)
            out.append(Message(sig.user_id, encode_signal(sig)))
        self.bus.publish(out)

    def run(self) -> None:
        while not self.stop.is_set():
            self.batch(100)
            time.sleep(0.02)


@contextmanager
def running(*runtimes: ConsumerRuntime) -> Iterator[None]:
    """The consumers run on threads of their own until the block ends."""
    threads = [
        threading.Thread(target=r.run, kwargs={"install_signal_handlers": False}, daemon=True)
        for r in runtimes
    ]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        for r in runtimes:
            r.stop()
        for t in threads:
            t.join(30)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("servers", marks=[pytest.mark.redis, pytest.mark.postgres, pytest.mark.nats]),
    ]
)
def hw(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Application]:
    """The embedded stack; with the online store on Redis; or on the scale-out servers
    (NATS bus of four partitions, Redis online store, PostgreSQL control plane)."""
    monkeypatch.setenv("HEADWATER_ARCHIVE_FLUSH_SECONDS", "0.3")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    if request.param in ("redis", "servers"):
        monkeypatch.setenv("HEADWATER_ONLINE_URL", f"{server_url('redis')}?prefix={prefix}")
    if request.param == "servers":
        monkeypatch.setenv("HEADWATER_CONTROL_URL", request.getfixturevalue("postgres_url"))
        monkeypatch.setenv(
            "HEADWATER_BUS_URL",
            f"{request.getfixturevalue('nats_url')}?topic=hwt.{prefix}&partitions=4",
        )
    app = Application(Settings.from_env(tmp_path / "hw"))
    app.register_shipped_contracts()
    yield app
    for namespace in {USER_NAMESPACE}.union(
        *(
            r.namespaces
            for r in app.feature_backfills.runs(("computing", "staged", "done", "failed"))
        )
    ):
        app.online.clear(namespace)
    app.close()
    if request.param == "servers":
        from headwater.bus.nats import delete_bus

        delete_bus(app.settings.bus_url)


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    assert callable(condition)
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _drained(hw: Application, group: str) -> bool:
    return sum(p.lag_events for p in hw.bus.lag(group)) == 0


def _by_user(sent: list[Signal]) -> dict[str, list[Signal]]:
    by_user: dict[str, list[Signal]] = {}
    for sig in sent:
        by_user.setdefault(sig.user_id, []).append(sig)
    return by_user


def _assert_from_scratch(
    engine: FeatureEngine, rows: dict[str, bytes], by_user: dict[str, list[Signal]]
) -> None:
    """Each user's stored values, read as the API reads them, equal the values computed
    from scratch over all of the user's signals."""
    now_ms = int(time.time() * 1000)
    assert set(rows) == set(by_user)
    for user, signals in by_user.items():
        scratch: dict[str, object] = {}
        engine.apply(scratch, signals)
        expected = engine.read(user, scratch, now_ms=now_ms, as_of_ms=now_ms).features
        got = engine.read(user, engine.decode(rows[user]), now_ms=now_ms, as_of_ms=now_ms)
        assert got.features == expected, user


def _consumers(hw: Application, members: int) -> list[ConsumerRuntime]:
    """``members`` feature consumers of one group (the partitions split among them) and
    the archive consumer."""
    features = [hw.consumer("features", batch_size=500) for _ in range(members)]
    return [*features, hw.consumer("archive")]


@pytest.mark.slow
@pytest.mark.parametrize("members", [1, 2])
def test_backfill_is_handed_over_to_the_running_stream(hw: Application, members: int) -> None:
    traffic = Traffic(hw)
    traffic.batch(3000)  # history before the change
    with running(*_consumers(hw, members)):
        traffic.thread.start()
        try:
            _wait(lambda: len(traffic.sent) > 6000, 60, "traffic")
            _, registered = hw.feature_versions.apply(VERSION_2)
            assert registered is not None
            assert set(registered.backfilling) == {"recently_purchased", "window_counts"}
            answer = hw.features.read("u1")
            assert answer.backfilling == ["window_counts", "recently_purchased"]
            assert "recently_purchased" not in answer.features

            _wait(lambda: len(traffic.sent) > 9000, 60, "more traffic")
            run = hw.new_backfill().run()
            assert run is not None
            assert run.progress["users_done"] == USERS
            assert run.positions  # the archive's bus positions the values hold up to
            _wait(lambda: not hw.feature_backfills.runs(("staged",)), 60, "the take-over")
            _wait(lambda: len(traffic.sent) > 14000, 60, "traffic after the take-over")
        finally:
            traffic.stop.set()
            traffic.thread.join()
        _wait(lambda: _drained(hw, "features"), 60, "the stream")

    current = hw.feature_versions.current()
    assert current is not None
    assert not current.backfilling
    [done] = hw.feature_backfills.runs(("done",))
    assert set(done.handed_over) == set(range(hw.bus.partitions))
    groups = {g for (g,) in hw.control.execute("SELECT DISTINCT grp FROM hw_feature_handovers")}
    assert groups == {"features"}
    # Taken over while the stream ran: at or after the archive's position.
    assert all(done.handed_over[p] >= done.positions[p] for p in done.positions)

    engine = FeatureEngine(VERSION_2, version=current.version, defined_in=current.defined_in)
    by_user = _by_user(traffic.sent)
    rows = hw.online.get(USER_NAMESPACE, list(by_user))
    _assert_from_scratch(engine, rows, by_user)
    answer = hw.features.read("u1")
    assert answer.backfilling == []
    assert answer.versions["recently_purchased"] == current.version
    assert answer.versions["window_counts"] == current.version
    assert answer.versions["counts"] == 1


class Churn:
    """Feature consumers of one group that join and leave while the hand-over happens:
    each step starts a new member and stops the oldest, so partitions move between
    members in the middle of the take-over."""

    def __init__(self, hw: Application) -> None:
        self.hw = hw
        self.members: list[tuple[ConsumerRuntime, threading.Thread]] = []
        self.steps = 0

    def start(self) -> None:
        runtime = self.hw.consumer("features", batch_size=500)
        thread = threading.Thread(
            target=runtime.run, kwargs={"install_signal_handlers": False}, daemon=True
        )
        thread.start()
        self.members.append((runtime, thread))

    def step(self) -> None:
        self.start()
        time.sleep(0.4)
        runtime, thread = self.members.pop(0)
        runtime.stop()
        thread.join(30)
        self.steps += 1

    def stop(self) -> None:
        for runtime, thread in self.members:
            runtime.stop()
            thread.join(30)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["backfill"])  # a rebuild: see docs/feature-versions.md
def test_members_that_come_and_go_during_the_hand_over_lose_and_double_nothing(
    hw: Application, kind: RunKind
) -> None:
    traffic = Traffic(hw)
    traffic.batch(3000)
    churn = Churn(hw)
    churn.start()
    churn.start()
    with running(hw.consumer("archive")):
        traffic.thread.start()
        try:
            _wait(lambda: len(traffic.sent) > 5000, 60, "traffic")
            _, registered = hw.feature_versions.apply(VERSION_2)
            assert registered is not None
            _wait(lambda: len(traffic.sent) > 7000, 60, "more traffic")
            run = hw.new_backfill().run(kind=kind)
            assert run is not None
            # Members come and go until the run is handed over on every partition.
            deadline = time.monotonic() + 90
            while hw.feature_backfills.runs(("staged",)) or churn.steps < 3:
                assert time.monotonic() < deadline, "the take-over did not complete"
                churn.step()
            sent = len(traffic.sent)
            _wait(lambda: len(traffic.sent) > sent + 2000, 60, "traffic after the take-over")
        finally:
            traffic.stop.set()
            traffic.thread.join()
        _wait(lambda: _drained(hw, "features"), 60, "the stream")
        churn.stop()

    current = hw.feature_versions.current()
    assert current is not None
    assert not current.backfilling
    [done] = hw.feature_backfills.runs(("done",))
    assert set(done.handed_over) == set(range(hw.bus.partitions))
    assert current.namespace == (done.namespace if kind == "rebuild" else USER_NAMESPACE)
    engine = FeatureEngine(VERSION_2, version=current.version, defined_in=current.defined_in)
    by_user = _by_user(traffic.sent)
    _assert_from_scratch(engine, hw.online.get(current.namespace, list(by_user)), by_user)


@pytest.mark.slow
@pytest.mark.parametrize("members", [1, 2])
def test_rebuild_recreates_the_store_and_equals_the_live_one(hw: Application, members: int) -> None:
    traffic = Traffic(hw)
    traffic.batch(4000)
    with running(*_consumers(hw, members)):
        traffic.thread.start()
        try:
            _wait(lambda: len(traffic.sent) > 7000, 60, "traffic")
            assert hw.features.namespace == USER_NAMESPACE  # a reader running before
            # While the stream runs: rebuilt from the archive and the bus tail, switched.
            first = hw.new_backfill().run(kind="rebuild")
            assert first is not None
            _wait(lambda: not hw.feature_backfills.runs(("staged",)), 60, "the take-over")
            _wait(lambda: len(traffic.sent) > 11000, 60, "traffic after the switch")
        finally:
            traffic.stop.set()
            traffic.thread.join()
        _wait(lambda: _drained(hw, "features"), 60, "the stream")
        _wait(lambda: _drained(hw, "archive"), 60, "the archive")
        current = hw.feature_versions.current()
        assert current is not None
        assert current.namespace == first.namespace
        assert current.previous_namespace == USER_NAMESPACE

        engine = FeatureEngine()
        by_user = _by_user(traffic.sent)
        _assert_from_scratch(engine, hw.online.get(first.namespace, list(by_user)), by_user)
        time.sleep(1.1)  # the reader polls the namespace once a second
        assert hw.features.read("u3").found
        assert hw.features.namespace == first.namespace
        stored = hw.online.get(first.namespace, ["u3"])["u3"]
        assert (
            hw.features.read("u3").features
            == engine.read(
                "u3", engine.decode(stored), now_ms=int(time.time() * 1000), as_of_ms=None
            ).features
        )

        # A second rebuild of the quiet stack equals the live store, user by user.
        live = {
            u: engine.decode(r) for u, r in hw.online.get(first.namespace, list(by_user)).items()
        }
        second = hw.new_backfill().run(kind="rebuild")
        assert second is not None
        _wait(lambda: not hw.feature_backfills.runs(("staged",)), 60, "the second take-over")
    again = hw.online.get(second.namespace, list(by_user))
    assert set(again) == set(live)
    for user, state in live.items():
        assert engine.decode(again[user]) == state, user

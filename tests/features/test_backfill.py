"""Backfill from the archive: the stream's pass over archived rows, erased users left out,
progress recorded, and a take-over that waits for the stream to reach the archive."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from headwater.archive.consumer import position_id
from headwater.archive.schema import signals_to_arrow
from headwater.archive.table import ArchiveTable
from headwater.bus import Message, open_bus
from headwater.bus.base import KIND_SIGNAL, Record
from headwater.contract.signal import Signal, encode_signal
from headwater.control import open_control_database
from headwater.erasure.events import ErasureEvent
from headwater.features.backfill import Backfill, archived_states
from headwater.features.backfills import BackfillLedger, BackfillRun
from headwater.features.consumer import FeatureConsumer
from headwater.features.engine import FeatureEngine
from headwater.features.following import DefinitionFollower
from headwater.features.handover import SUPERSEDED, TailReader, bus_tail, take_over
from headwater.features.live import LiveDefinitions
from headwater.features.signals import decode_stream_signal
from headwater.features.spec import DEFAULT_FEATURES, FeatureSpec
from headwater.features.versions import FeatureVersions
from headwater.online import OnlineStore, open_online_store
from headwater.online.base import Position

NOW = datetime.now(UTC).replace(microsecond=0)
PURCHASED = FeatureSpec(
    name="recently_purchased", kind="recent_items", event_types=("purchase",), size=3
)
COUNTED = FeatureSpec(name="purchases", kind="count", event_types=("purchase",))
RATED = FeatureSpec(name="rating_mean", kind="mean", event_types=("rating",), field="rating")


def subject(user: str) -> str:
    return f"h-{user}"


def signals() -> list[Signal]:
    out = []
    for i in range(600):
        user = f"u{i % 7}"
        etype = ("view", "purchase", "rating", "click")[i % 4]
        out.append(
            Signal(
                event_id=f"e{i}",
                event_type=etype,
                user_id=user,
                surface="web",
                timestamp=NOW - timedelta(seconds=600 - i),
                item_id=f"i{i % 11}",
                payload={"rating": i % 5 + 1} if etype == "rating" else {},
            )
        )
    return out


class Fixture:
    def __init__(self, tmp_path: Path) -> None:
        self.db = open_control_database(f"sqlite:///{tmp_path}/control.db")
        self.versions = FeatureVersions(self.db)
        self.versions.ensure_initial(DEFAULT_FEATURES)
        self.ledger = BackfillLedger(self.db)
        self.table = ArchiveTable(str(tmp_path / "archive"))
        self.store: OnlineStore = open_online_store(f"sqlite:///{tmp_path}/online.db")
        self.sent = signals()
        # Two commits, as the archive consumer makes them: rows and positions together.
        half = len(self.sent) // 2
        self.table.append(
            signals_to_arrow(self.sent[:half], subject),
            transactions={position_id("archive", 0): 300, position_id("archive", 1): 0},
        )
        self.table.append(
            signals_to_arrow(self.sent[half:], subject),
            transactions={position_id("archive", 0): 410, position_id("archive", 1): 190},
        )

    def backfill(self, erased: dict[str, int] | None = None) -> Backfill:
        return Backfill(
            self.versions,
            self.ledger,
            self.table,
            self.store,
            FeatureEngine(),
            partitions=2,
            erased=lambda: dict(erased or {}),
            subject=subject,
        )

    def close(self) -> None:
        self.store.close()
        self.table.close()
        self.db.close()


@pytest.fixture
def fx(tmp_path: Path) -> Iterator[Fixture]:
    f = Fixture(tmp_path)
    yield f
    f.close()


def scratch(specs: tuple[FeatureSpec, ...], user: str, sent: list[Signal]) -> dict[str, object]:
    engine = FeatureEngine(specs)
    state: dict[str, object] = {}
    engine.apply(state, [s for s in sent if s.user_id == user])
    return engine.read(user, state, now_ms=0, as_of_ms=None).features


def test_staged_values_are_the_stream_pass_over_every_archived_row(fx: Fixture) -> None:
    fx.versions.apply((*DEFAULT_FEATURES, PURCHASED, RATED))
    seen: list[tuple[int, int]] = []
    run = fx.backfill().run(progress=lambda done, total: seen.append((done, total)))
    assert run is not None
    assert run.state == "staged"
    assert run.features == {"recently_purchased": 2, "rating_mean": 2}
    assert run.positions == {0: 410, 1: 190}  # the archive's, from the same version
    assert run.progress["users_done"] == 7
    assert run.progress["events"] == 600
    assert seen[-1] == (7, 7)
    staged = fx.store.get(run.namespace, [f"u{i}" for i in range(7)])
    engine = FeatureEngine((PURCHASED, RATED), defined_in=run.features)
    for user, row in staged.items():
        got = engine.read(user, engine.decode(row), now_ms=0, as_of_ms=None).features
        assert got == scratch((PURCHASED, RATED), user, fx.sent)
    assert fx.backfill().run() is None  # nothing else pending
    [listed] = fx.ledger.runs(("staged",))
    assert listed.id == run.id


def test_erased_users_are_never_backfilled(fx: Fixture) -> None:
    fx.versions.apply((*DEFAULT_FEATURES, COUNTED))
    cut = NOW - timedelta(seconds=300)
    erased = {
        subject("u1"): int(NOW.timestamp() * 1000),
        subject("u2"): int(cut.timestamp() * 1000),
    }
    run = fx.backfill(erased).run()
    assert run is not None
    staged = fx.store.get(run.namespace, [f"u{i}" for i in range(7)])
    assert "u1" not in staged  # erased after all of its events
    # u2 came back after its erasure: only the later events count.
    later = [s for s in fx.sent if s.user_id != "u2" or s.timestamp > cut]
    engine = FeatureEngine((COUNTED,), defined_in=run.features)
    got = engine.read("u2", engine.decode(staged["u2"]), now_ms=0, as_of_ms=None).features
    assert got == scratch((COUNTED,), "u2", later)
    assert got != scratch((COUNTED,), "u2", fx.sent)


def test_archived_states_in_event_time_order() -> None:
    sent = signals()
    data = signals_to_arrow(list(reversed(sent)), subject)  # archive order differs
    engine = FeatureEngine((PURCHASED,))
    states = dict(
        archived_states(
            data.select(["event_id", "event_type", "user_id", "item_id", "surface", "timestamp"]),
            engine,
        )
    )
    assert set(states) == {f"u{i}" for i in range(7)}
    for user, state in states.items():
        assert engine.read(user, state, now_ms=0, as_of_ms=None).features == scratch(
            (PURCHASED,), user, sent
        )


def test_take_over_waits_until_the_stream_reaches_the_archive(fx: Fixture) -> None:
    fx.versions.apply((*DEFAULT_FEATURES, PURCHASED))
    run = fx.backfill().run()
    assert run is not None

    def no_tail(starts: object, ends: object) -> Iterator[list[object]]:
        raise AssertionError("read the bus although the stream is behind")

    behind = take_over(
        run,
        FeatureEngine((PURCHASED,), defined_in=run.features),
        store=fx.store,
        namespace="user",
        group="features",
        tail=no_tail,  # type: ignore[arg-type]
        partitions={0, 1},
        positions={0: 409, 1: 500},
        partition_of=lambda _user: 0,
        fence={},
        decode=msgspec.msgpack.decode,
    )
    assert behind is None
    assert fx.store.keys("user") == []


def tail_of(user: str, n: int, *, partition: int, start: int) -> tuple[list[Signal], TailReader]:
    """``n`` purchases of ``user`` on the bus after the archive, from offset ``start``."""
    sent = [
        Signal(
            event_id=f"t{i}",
            event_type="purchase",
            user_id=user,
            surface="web",
            timestamp=NOW + timedelta(seconds=i),
            item_id=f"t{i % 4}",
        )
        for i in range(n)
    ]
    records = [
        Record(partition, start + i, user, KIND_SIGNAL, encode_signal(sig), 0)
        for i, sig in enumerate(sent)
    ]

    def tail(starts: object, ends: object) -> Iterator[list[Record]]:
        yield records

    return sent, tail


def test_a_take_over_that_another_member_completed_meanwhile_writes_nothing(
    fx: Fixture,
) -> None:
    """Partition 1 moved to a new owner after its old owner wrote the hand-over but before
    it recorded it: the new owner read a ledger without partition 1 and takes it over
    too, while the old owner records, completes the run and clears its staged values."""
    fx.versions.apply((*DEFAULT_FEATURES, PURCHASED))
    run = fx.backfill().run()
    assert run is not None
    tail_sent, tail = tail_of("u1", 1, partition=1, start=190)
    engine = FeatureEngine((PURCHASED,), defined_in=run.features)

    def over(partitions: set[int]) -> object:
        return take_over(
            run,
            engine,
            store=fx.store,
            namespace="user",
            group="features",
            tail=tail,
            partitions=partitions,
            positions={0: 410, 1: 191},
            partition_of=lambda user: 1 if user == "u1" else 0,
            fence={},
            decode=decode_stream_signal,
            completed=lambda: set(run.positions) <= set(fx.ledger.handed_over(run.id)),
        )

    handed = over({0, 1})  # the old owner
    assert isinstance(handed, dict)
    fx.ledger.record_handover(run.id, "features", handed, 0)
    fx.store.clear(run.staging)
    written = fx.store.get("user", ["u1"])
    assert over({1}) is SUPERSEDED  # the new owner, from its earlier read of the ledger
    assert fx.store.get("user", ["u1"]) == written
    got = engine.read("u1", engine.decode(written["u1"]), now_ms=0, as_of_ms=None).features
    assert got == scratch((PURCHASED,), "u1", [*fx.sent, *tail_sent])


def test_a_repeated_rebuild_take_over_counts_the_bus_tail_once(fx: Fixture) -> None:
    """A member that crashed after writing a rebuild's hand-over, before recording it,
    repeats it: the staged values are read again, unchanged, and every record of the
    bus tail is counted once (more of them than a row's recent event ids remember)."""
    run = fx.backfill().run(kind="rebuild")
    assert run is not None
    assert run.staging != run.namespace
    tail_sent, tail = tail_of("u1", 40, partition=1, start=190)
    engine = FeatureEngine(defined_in=run.features)
    users = [f"u{i}" for i in range(7)]
    rows = []
    for _ in range(2):
        take_over(
            run,
            engine,
            store=fx.store,
            namespace=run.namespace,
            group="features",
            tail=tail,
            partitions={0, 1},
            positions={0: 410, 1: 230},
            partition_of=lambda user: 1 if user == "u1" else 0,
            fence={},
            decode=decode_stream_signal,
        )
        rows.append(fx.store.get(run.namespace, users))
    assert rows[0] == rows[1]
    got = engine.read("u1", engine.decode(rows[1]["u1"]), now_ms=0, as_of_ms=None).features
    assert got == scratch(DEFAULT_FEATURES, "u1", [*fx.sent, *tail_sent])


def test_an_erasure_removes_the_user_from_a_staged_run(fx: Fixture) -> None:
    fx.versions.apply((*DEFAULT_FEATURES, PURCHASED))
    run = fx.backfill().run()
    assert run is not None
    assert fx.store.get(run.namespace, ["u3"])
    live = LiveDefinitions(fx.versions, FeatureEngine(), ledger=fx.ledger)
    consumer = FeatureConsumer(fx.store, live.engine(stream=True), definitions=live)
    [confirmation] = consumer.erase(
        ErasureEvent(request_id="r1", user_id="u3", requested_at=datetime.now(UTC))
    )
    assert confirmation.ok
    assert fx.store.get(run.namespace, ["u3"]) == {}
    assert fx.store.get(run.namespace, ["u4"])  # the others stay staged


def test_a_staged_run_of_a_replaced_definition_is_retired(fx: Fixture) -> None:
    fx.versions.apply((*DEFAULT_FEATURES, PURCHASED))
    old = fx.backfill().run()
    assert old is not None
    bigger = msgspec.structs.replace(PURCHASED, size=5)
    fx.versions.apply((*DEFAULT_FEATURES, bigger))
    new = fx.backfill().run()
    assert new is not None
    assert new.features == {"recently_purchased": 3}
    [failed] = fx.ledger.runs(("failed",))
    assert failed.id == old.id
    assert fx.store.keys(old.namespace) == []
    assert [r.id for r in fx.ledger.runs(("staged",))] == [new.id]


def test_bus_tail_reads_exactly_the_range_asked(tmp_path: Path) -> None:
    bus = open_bus(f"sqlite:///{tmp_path}/bus.db")
    try:
        bus.publish([Message(f"u{i}", b"x") for i in range(400)])
        part = bus.partition_of("u0")
        got = [r for batch in bus_tail(bus, {part: 3}, {part: 9}) for r in batch]
        assert [r.offset for r in got] == [3, 4, 5, 6, 7, 8]
        assert {r.partition for r in got} == {part}
        assert [r for batch in bus_tail(bus, {part: 4}, {part: 4}) for r in batch] == []
    finally:
        bus.close()


def test_a_partition_handed_over_by_another_member_is_computed_there_at_once(
    fx: Fixture,
) -> None:
    """The run is handed over on partition 0 (by the member that held it), not yet on
    partition 1, which this member holds but is behind the archive on. Partition 0 came to
    this member: its records are computed with the run's features from the next batch on,
    partition 1's without them until this member takes it over."""
    fx.versions.apply((*DEFAULT_FEATURES, PURCHASED))
    run = fx.backfill().run()
    assert run is not None
    fx.ledger.record_handover(run.id, "features", {0: (410, 420)}, 0)
    live = LiveDefinitions(fx.versions, FeatureEngine(), ledger=fx.ledger)
    follower = DefinitionFollower(
        live,
        fx.store,
        group="features",
        decode=decode_stream_signal,
        tail=tail_of("u1", 1, partition=1, start=190)[1],
        partition_of=lambda user: 1 if user == "u1" else 0,
    )
    stream = follower.follow(
        live.engine(stream=True),
        {0: Position(420, 0), 1: Position(100, 0)},  # behind the archive (190) on 1
        held={0, 1},
        fence_of=lambda parts: dict.fromkeys(parts, 1),
    )
    purchase = [s for s in fx.sent if s.event_type == "purchase"][:1]

    def computed(engine: FeatureEngine) -> set[str]:
        state: dict[str, object] = {}
        engine.apply(state, purchase)
        return set(engine.read("u9", state, now_ms=0, as_of_ms=None).features)

    assert "recently_purchased" in computed(follower.engine_for(0, stream))
    assert "recently_purchased" not in computed(follower.engine_for(1, stream))
    assert fx.ledger.handed_over(run.id) == {0: 420}  # partition 1 waits for the stream


def _member(fx: Fixture) -> FeatureConsumer:
    """A feature consumer following the control plane: ``u0`` on partition 0, ``u1``
    on partition 1, whose bus tail from the archive's position (190) holds ``u1``'s."""
    live = LiveDefinitions(fx.versions, FeatureEngine(), ledger=fx.ledger)
    return FeatureConsumer(
        fx.store,
        live.engine(stream=True),
        definitions=live,
        tail=tail_of("u1", 1, partition=1, start=190)[1],
        partition_of=lambda user: 0 if user == "u0" else 1,
        record_freshness=False,
    )


def _rebuilt_by_another_member(fx: Fixture) -> tuple[BackfillRun, bytes, FeatureConsumer]:
    """A rebuild taken over on partition 0 by the member that held it (its row of ``u0``
    written to the run's namespace), not on partition 1; and this member's consumer,
    which holds both and is behind the archive (190) on partition 1: the run, ``u0``'s
    rebuilt row, the consumer."""
    run = fx.backfill().run(kind="rebuild")
    assert run is not None
    fx.ledger.record_handover(run.id, "features", {0: (410, 420)}, 0)
    rebuilt_u0 = fx.store.get(run.staging, ["u0"])["u0"]
    fx.store.put(run.namespace, {"u0": rebuilt_u0})  # as the other member's take-over wrote it
    consumer = _member(fx)
    behind = {0: Position(420, 0), 1: Position(100, 0)}  # behind the archive (190) on 1
    fx.store.put("user", {}, group="features", positions=behind, fence=consumer._fence_of({0, 1}))
    return run, rebuilt_u0, consumer


def test_a_partition_rebuilt_by_another_member_is_written_to_the_rebuilt_namespace(
    fx: Fixture,
) -> None:
    """A rebuild is taken over on partition 0 (by the member that held it), not on
    partition 1, which this member holds but is behind the archive on. Partition 0 came to
    this member: its users' rows are read from and written to the rebuilt namespace (with
    the partition's position), and mirrored to the old one; partition 1's stay in the old
    namespace until this member takes it over."""
    run, rebuilt_u0, consumer = _rebuilt_by_another_member(fx)
    new = [
        Signal(
            event_id=f"n{user}",
            event_type="purchase",
            user_id=user,
            surface="web",
            timestamp=NOW,
            item_id="i-new",
        )
        for user in ("u0", "u1")
    ]
    consumer.handle(
        [
            Record(0, 420, "u0", KIND_SIGNAL, encode_signal(new[0]), 0),
            Record(1, 100, "u1", KIND_SIGNAL, encode_signal(new[1]), 0),
        ]
    )
    engine = FeatureEngine()
    expected = engine.decode(rebuilt_u0)
    engine.apply(expected, [new[0]])
    got = fx.store.get(run.namespace, ["u0", "u1"])
    assert set(got) == {"u0"}
    assert engine.decode(got["u0"])["counts"] == expected["counts"]
    old = fx.store.get("user", ["u0", "u1"])
    assert old["u0"] == got["u0"]  # mirrored to the namespace readers still read
    assert engine.decode(old["u1"])["counts"] == {"purchase": 1}
    assert {p: pos.next_offset for p, pos in fx.store.positions("features").items()} == {
        0: 421,
        1: 101,
    }


def test_a_partition_rebuilt_by_another_member_goes_on_computing_the_features_it_adds(
    fx: Fixture,
) -> None:
    """A rebuild that adds a feature is taken over on partition 0 by another member; the
    partition then came to this member, which has not taken the run over (it is behind
    the archive on partition 1). A purchase on partition 0 is applied to the rebuilt row
    with the added feature too: the row keeps every purchase, not only in its counts."""
    fx.versions.apply((*DEFAULT_FEATURES, PURCHASED))
    run, rebuilt_u0, consumer = _rebuilt_by_another_member(fx)
    consumer.handle([_purchase_of_u0()])
    assert fx.ledger.handed_over(run.id) == {0: 420}  # this member did not take it over
    _assert_the_purchase_is_in_the_rebuilt_row(fx, run, rebuilt_u0)


def test_a_member_assigned_its_partitions_after_a_rebuild_switched_computes_what_it_adds(
    fx: Fixture,
) -> None:
    """A member is made while a rebuild that adds a feature is staged (its engine lacks
    the feature); other members complete the run and switch the namespace before the
    member's partitions are assigned. The assignment reads the control plane at once;
    the member's first batch is written to the rebuilt namespace with the added feature
    too, not with the engine it was made with."""
    fx.versions.apply((*DEFAULT_FEATURES, PURCHASED))
    run = fx.backfill().run(kind="rebuild")
    assert run is not None
    consumer = _member(fx)
    # Other members take the run over on both partitions and switch the namespace.
    fx.ledger.record_handover(run.id, "features", {0: (410, 420), 1: (190, 190)}, 0)
    rebuilt_u0 = fx.store.get(run.staging, ["u0"])["u0"]
    fx.store.put(run.namespace, {"u0": rebuilt_u0})
    fx.versions.switch_namespace(run.namespace, run.features)
    fx.ledger.update(run.id, state="done")
    at = {0: Position(420, 0), 1: Position(190, 0)}
    fx.store.put(
        run.namespace, {}, group="features", positions=at, fence=consumer.on_assigned({0, 1})
    )
    consumer.handle([_purchase_of_u0()])
    assert consumer.namespace == run.namespace
    _assert_the_purchase_is_in_the_rebuilt_row(fx, run, rebuilt_u0)


_PURCHASE = Signal(
    event_id="nu0",
    event_type="purchase",
    user_id="u0",
    surface="web",
    timestamp=NOW,
    item_id="i-new",
)


def _purchase_of_u0() -> Record:
    """A purchase of ``u0`` at the next offset of partition 0 (420)."""
    return Record(0, 420, "u0", KIND_SIGNAL, encode_signal(_PURCHASE), 0)


def _assert_the_purchase_is_in_the_rebuilt_row(
    fx: Fixture, run: BackfillRun, rebuilt_u0: bytes
) -> None:
    """``u0``'s row in the rebuild's namespace holds the purchase in its counts and in the
    feature the rebuild adds (``recently_purchased``), not in its counts only."""
    engine = FeatureEngine((*DEFAULT_FEATURES, PURCHASED))
    expected = engine.decode(rebuilt_u0)
    engine.apply(expected, [_PURCHASE])
    got = engine.decode(fx.store.get(run.namespace, ["u0"])["u0"])
    assert got["counts"] == expected["counts"]
    assert got["recently_purchased"] == expected["recently_purchased"]
    assert "i-new" in [item for item, *_ in zip(*got["recently_purchased"], strict=True)]


def test_archived_states_come_in_the_order_of_each_users_first_event() -> None:
    """As the stream first wrote them: the SQLite store keeps rows in that order."""
    # u6 first, then u5, ...: the first events' order is not the ids' order.
    sent = [msgspec.structs.replace(s, user_id=f"u{6 - int(s.user_id[1:])}") for s in signals()]
    data = signals_to_arrow(list(reversed(sent)), subject)
    first: dict[str, datetime] = {}
    for s in sent:
        first[s.user_id] = min(first.get(s.user_id, s.timestamp), s.timestamp)
    users = [u for u, _ in archived_states(data, FeatureEngine((PURCHASED,)))]
    assert users == sorted(first, key=lambda u: (first[u], u))
    assert users != sorted(first)

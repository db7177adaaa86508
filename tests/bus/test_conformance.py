"""The bus port's conformance suite: every backend must pass all of it."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import pytest

from headwater.bus import Bus, BusConsumer, Message, Record, committed_positions, open_bus
from headwater.errors import BusError, ConfigurationError

PARTITIONS = 4


@pytest.fixture
def bus(bus_url: str) -> Iterator[Bus]:
    b = open_bus(bus_url)
    yield b
    b.close()


def messages(n: int, users: int = 20, prefix: str = "m") -> list[Message]:
    return [Message(key=f"user-{i % users}", value=f"{prefix}{i}".encode()) for i in range(n)]


def drain(consumer: BusConsumer, expect: int, timeout: float = 30.0) -> list[Record]:
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(out) < expect and time.monotonic() < deadline:
        out.extend(consumer.poll(500, 0.2))
    return out


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_every_record_arrives_in_order_per_key(bus: Bus) -> None:
    sent = messages(600)
    bus.publish(sent[:300])
    bus.publish(sent[300:])
    consumer = bus.consumer("g1")
    got = drain(consumer, len(sent))
    consumer.close()
    assert sorted(r.value for r in got) == sorted(m.value for m in sent)
    by_key: dict[str, list[bytes]] = defaultdict(list)
    partition_of: dict[str, set[int]] = defaultdict(set)
    for r in got:
        by_key[r.key].append(r.value)
        partition_of[r.key].add(r.partition)
        assert r.kind == "signal"
        assert r.timestamp_ms > 0
    for key, values in by_key.items():
        assert values == [m.value for m in sent if m.key == key], key
        assert len(partition_of[key]) == 1, f"{key} spread over partitions"
        assert bus.partition_of(key) in partition_of[key], "partition_of agrees with placement"
    assert bus.partitions == PARTITIONS
    # Offsets increase within each partition.
    per_part: dict[int, list[int]] = defaultdict(list)
    for r in got:
        per_part[r.partition].append(r.offset)
    for offsets in per_part.values():
        assert offsets == sorted(offsets)
        assert len(set(offsets)) == len(offsets)


def test_kinds_are_kept(bus: Bus) -> None:
    bus.publish([Message("u1", b"s1"), Message("u1", b"e1", kind="erasure"), Message("u1", b"s2")])
    consumer = bus.consumer("g")
    got = drain(consumer, 3)
    consumer.close()
    assert [(r.kind, r.value) for r in got] == [
        ("signal", b"s1"),
        ("erasure", b"e1"),
        ("signal", b"s2"),
    ]


def test_a_kind_member_is_handed_its_kinds_only_and_commits_past_the_rest(bus: Bus) -> None:
    sent = messages(300)
    erasures = [Message(f"user-{i}", f"x{i}".encode(), kind="erasure") for i in range(0, 20, 3)]
    bus.publish(sent[:150] + erasures[:4])
    bus.publish(sent[150:] + erasures[4:])
    member = bus.kind_consumer("only-erasures", ["erasure"])
    got: list[Record] = []
    deadline = time.monotonic() + 30
    while sum(p.lag_events for p in bus.lag("only-erasures")) and time.monotonic() < deadline:
        got.extend(member.poll(100, 0.2))
        member.commit(member.covered())  # past the signals read, not only the erasures
    member.close()
    assert sum(p.lag_events for p in bus.lag("only-erasures")) == 0
    assert all(r.kind == "erasure" for r in got)
    assert sorted(r.value for r in got) == sorted(m.value for m in erasures)
    # A later member of the group starts past all of it.
    bus.publish(messages(5, prefix="late"))
    again = bus.consumer("only-erasures")
    assert sorted(r.value for r in drain(again, 5)) == sorted(
        m.value for m in messages(5, prefix="late")
    )
    again.close()


def test_resume_from_committed_position_after_restart(bus_url: str) -> None:
    first = open_bus(bus_url)
    sent = messages(400)
    first.publish(sent)
    consumer = first.consumer("resume")
    got = drain(consumer, 150)
    half = got[:150]
    consumer.commit(committed_positions(half))
    consumer.close()
    first.close()

    # A new process: a new bus instance and a new member of the same group.
    second = open_bus(bus_url)
    again = second.consumer("resume")
    rest = drain(again, 250)
    again.close()
    second.close()
    seen = {r.value for r in half} | {r.value for r in rest}
    assert seen == {m.value for m in sent}
    committed = {(r.partition, r.offset) for r in half}
    assert not committed & {(r.partition, r.offset) for r in rest}, "committed records redelivered"


def test_uncommitted_records_are_delivered_again(bus: Bus) -> None:
    bus.publish(messages(100))
    consumer = bus.consumer("again")
    first = drain(consumer, 100)
    consumer.close()  # crashed before committing
    consumer = bus.consumer("again")
    second = drain(consumer, 100)
    consumer.close()
    assert sorted(r.value for r in first) == sorted(r.value for r in second)


def test_groups_are_independent(bus: Bus) -> None:
    bus.publish(messages(50))
    a = bus.consumer("a")
    a_got = drain(a, 50)
    a.commit(committed_positions(a_got))
    a.close()
    b = bus.consumer("b")
    assert len(drain(b, 50)) == 50
    b.close()


def test_durable_once_publish_returns(bus_url: str) -> None:
    writer = open_bus(bus_url)
    writer.publish(messages(64, prefix="d"))
    writer.close()
    reader = open_bus(bus_url)
    consumer = reader.consumer("durable")
    got = drain(consumer, 64)
    consumer.close()
    reader.close()
    assert len({r.value for r in got}) == 64


def test_group_rebalances_between_two_members(bus: Bus) -> None:
    one = bus.consumer("shared", member="m1")
    wait_for(lambda: len(one.assignment()) == PARTITIONS)
    two = bus.consumer("shared", member="m2")

    def balanced() -> bool:
        # Members learn their assignment while polling, as real consumers do.
        one.poll(10, 0.05)
        two.poll(10, 0.05)
        a, b = one.assignment(), two.assignment()
        return bool(a) and bool(b) and not a & b and a | b == set(range(PARTITIONS))

    wait_for(balanced, 60)
    sent = messages(400)
    bus.publish(sent)
    got: list[Record] = []
    deadline = time.monotonic() + 30
    while len(got) < len(sent) and time.monotonic() < deadline:
        for member in (one, two):
            batch = member.poll(200, 0.1)
            assert {r.partition for r in batch} <= member.assignment() | set()
            member.commit(committed_positions(batch))
            got.extend(batch)
    assert sorted(r.value for r in got) == sorted(m.value for m in sent)
    two.close()
    wait_for(lambda: (one.poll(10, 0.05), len(one.assignment()) == PARTITIONS)[1], 60)
    one.close()


def test_lag_in_events_and_seconds(bus: Bus) -> None:
    bus.publish(messages(120))
    time.sleep(0.3)
    lag = bus.lag("lagging")
    assert len(lag) == PARTITIONS
    assert sum(p.lag_events for p in lag) == 120
    assert max(p.lag_seconds for p in lag) >= 0.2
    consumer = bus.consumer("lagging")
    got = drain(consumer, 120)
    consumer.commit(committed_positions(got))
    consumer.close()
    wait_for(lambda: sum(p.lag_events for p in bus.lag("lagging")) == 0, 15)
    assert all(p.lag_seconds == 0 for p in bus.lag("lagging"))
    assert all(p.committed == p.end for p in bus.lag("lagging"))


def test_erasure_capability_is_stated_honestly(bus: Bus) -> None:
    bus.publish([Message("victim", b"v1"), Message("other", b"o1"), Message("victim", b"v2")])
    cap = bus.erasure_capability()
    assert cap.detail
    if cap.can_purge:
        assert bus.purge_key("victim") == 2
        consumer = bus.consumer("after-purge")
        got = drain(consumer, 1, timeout=3)
        consumer.close()
        assert [r.value for r in got] == [b"o1"]
    else:
        assert cap.method in ("retention", "compaction")
        assert cap.retention_seconds is not None
        assert cap.retention_seconds > 0
        with pytest.raises(BusError):
            bus.purge_key("victim")


def test_records_after_purged_batches_still_arrive(bus: Bus) -> None:
    # Whole publishes of one key, then another key's record, all in one partition's log:
    # once the first key is purged, a reader taking one record at a time must get past
    # the emptied stretch instead of polling it forever.
    key = "victim"
    for i in range(5):
        bus.publish([Message(key, f"v{i}a".encode()), Message(key, f"v{i}b".encode())])
    survivor = next(
        f"other-{i}" for i in range(1000) if bus.partition_of(f"other-{i}") == bus.partition_of(key)
    )
    bus.publish([Message(survivor, b"kept")])
    if not bus.erasure_capability().can_purge:
        pytest.skip("this backend cannot purge single keys")
    assert bus.purge_key(key) == 10
    consumer = bus.consumer("after-purged-batches")
    got: list[Record] = []
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        got = consumer.poll(1, 0.1)
    consumer.close()
    assert [r.value for r in got] == [b"kept"]


def test_event_ids_can_be_looked_for_in_a_recent_stretch(bus: Bus) -> None:
    # A gateway that finds another's claim left behind asks whether its batch got there.
    from datetime import UTC, datetime

    from headwater.contract.signal import Signal, encode_signal

    def signal(event_id: str, user: str) -> Message:
        now = datetime.now(UTC)
        sig = Signal(
            event_id=event_id,
            event_type="view",
            user_id=user,
            surface="web",
            timestamp=now,
            item_id="i",
        )
        return Message(user, encode_signal(sig))

    before = int(time.time() * 1000) - 1000
    bus.publish([signal("a1", "ann"), signal("a2", "ann"), signal("b1", "bob")])
    found = bus.find_event_ids({"ann": {"a1", "a3"}, "bob": {"b1"}, "cyd": {"c1"}}, before)
    if found is None:
        assert not bus.erasure_capability().can_purge, "a bus that can look says so"
        return
    assert found == {"a1", "b1"}
    assert bus.find_event_ids({"ann": {"a1"}}, int(time.time() * 1000) + 60_000) == set()


def test_a_partition_is_read_back_whole_whatever_the_keys(bus: Bus) -> None:
    # The erasure verification's own read: a copy under another key is found too.
    part = bus.partition_of("victim")
    neighbour = next(f"other-{i}" for i in range(1000) if bus.partition_of(f"other-{i}") == part)
    elsewhere = next(f"far-{i}" for i in range(1000) if bus.partition_of(f"far-{i}") != part)
    bus.publish(
        [
            Message("victim", b"v1 evt-77 of victim"),
            Message(neighbour, b"copy of evt-77 of victim"),
            Message(neighbour, b"nothing"),
            Message(elsewhere, b"evt-77 of victim in another partition"),
        ]
    )

    def holds(data: bytes) -> bool:
        return b"evt-77" in data

    found = bus.search_partitions({part}, holds, lambda r: b"evt-77" in r.value)
    if found is None:
        assert not bus.erasure_capability().can_purge, "a bus that can purge can read back"
        return
    assert sorted((r.key, r.value) for r in found) == [
        (neighbour, b"copy of evt-77 of victim"),
        ("victim", b"v1 evt-77 of victim"),
    ]
    assert all(r.partition == part for r in found)
    assert bus.search_partitions({part}, holds, lambda r: False) == []
    # Told that what it looks for holds an id, the answer is the same.
    told = bus.search_partitions({part}, holds, lambda r: b"evt-77" in r.value, ids=["victim"])
    assert sorted((r.key, r.value) for r in told or []) == sorted((r.key, r.value) for r in found)
    # What holds nothing is not looked at further.
    assert bus.search_partitions({part}, lambda data: False, lambda r: True) == []


def test_a_partition_count_that_differs_from_the_log_is_an_error(bus: Bus, bus_url: str) -> None:
    assert "partitions=4" in bus_url
    with pytest.raises(ConfigurationError, match="partitions"):
        open_bus(bus_url.replace("partitions=4", "partitions=6"))
    # Without ?partitions= the log's own count is used.
    same = open_bus(bus_url.replace("partitions=4&", "").replace("?partitions=4", "?"))
    assert same.partitions == bus.partitions
    same.close()


def test_an_option_the_backend_does_not_read_is_an_error(bus: Bus, bus_url: str) -> None:
    # A misspelt option (retention_s for retention) would leave the default in force.
    with pytest.raises(ConfigurationError, match=r"unknown option\(s\) \['retention_s'\]"):
        open_bus(f"{bus_url}&retention_s=60")

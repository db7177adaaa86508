"""Property test: random streams, duplicates, lateness and consumer crashes never change
what the features say: they always equal the features computed from the published events."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from headwater.bus import Message, open_bus
from headwater.contract.signal import Signal, encode_signal
from headwater.features.consumer import FeatureConsumer
from headwater.features.engine import FeatureEngine
from headwater.features.reader import FeatureReader
from headwater.online import open_online_store
from headwater.runtime import ConsumerRuntime
from tests.features._reference import expected

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
USERS = ("ann", "bob", "cyd", "dee")
PAYLOADS: dict[str, Any] = {
    "view": st.just({}),
    "click": st.just({}),
    "save": st.just({"action": "add"}),
    "rating": st.integers(1, 5).map(lambda r: {"rating": r}),
    "purchase": st.just({"order_id": "o", "price": 1.0, "currency": "USD", "quantity": 1}),
    "search": st.just({"query": "q"}),
}


@st.composite
def events(draw: st.DrawFn) -> tuple[str, str, str | None, int, dict[str, Any], str]:
    etype = draw(st.sampled_from(sorted(PAYLOADS)))
    item = None if etype == "search" else draw(st.sampled_from(["i1", "i2", "i3", "i4"]))
    ago_s = draw(st.one_of(st.integers(0, 120), st.integers(0, 3 * 86400)))
    return (
        draw(st.sampled_from(USERS)),
        etype,
        item,
        ago_s,
        draw(PAYLOADS[etype]),
        draw(st.sampled_from(["web", "ios", "android"])),
    )


class FeatureStream(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.bus = open_bus(f"sqlite:///{self.dir}/bus.db?partitions=2")
        self.store = open_online_store(f"sqlite:///{self.dir}/online.db")
        self.published: list[Signal] = []
        self.seq = itertools.count()
        self.lateness_ms = 3_600_000
        self.runtime: ConsumerRuntime | None = None

    def _runtime(self) -> ConsumerRuntime:
        if self.runtime is None:
            engine = FeatureEngine(lateness_ms=self.lateness_ms)
            handler = FeatureConsumer(self.store, engine, record_freshness=False)
            self.runtime = ConsumerRuntime(
                self.bus, "features", handler, poll_timeout=0.01, batch_size=7
            )
        return self.runtime

    @initialize(lateness_ms=st.sampled_from([60_000, 3_600_000, 10 * 86_400_000]))
    def choose_lateness(self, lateness_ms: int) -> None:
        self.lateness_ms = lateness_ms

    @rule(batch=st.lists(events(), min_size=1, max_size=12))
    def publish(self, batch: list[tuple[str, str, str | None, int, dict[str, Any], str]]) -> None:
        signals = []
        for user, etype, item, ago_s, payload, surface in batch:
            n = next(self.seq)
            ts = NOW - timedelta(seconds=ago_s, milliseconds=n % 1000)  # distinct times
            signals.append(
                Signal(
                    event_id=f"e{n}",
                    event_type=etype,
                    user_id=user,
                    surface=surface,
                    timestamp=ts,
                    payload=payload,
                    item_id=item,
                    received_at=NOW,
                )
            )
        self.bus.publish([Message(s.user_id, encode_signal(s)) for s in signals])
        self.published.extend(signals)

    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        if self.published:
            again = data.draw(st.sampled_from(self.published))
            self.bus.publish([Message(again.user_id, encode_signal(again))])
            self.published.append(again)

    @rule(steps=st.integers(1, 4))
    def consume(self, steps: int) -> None:
        for _ in range(steps):
            self._runtime().step()

    @rule()
    def crash_after_write_before_commit(self) -> None:
        runtime = self._runtime()

        def crash(_positions: object) -> None:
            raise SystemExit("killed")

        runtime._consumer.commit = crash  # type: ignore[method-assign]
        with contextlib.suppress(SystemExit):
            runtime.step()
        runtime._consumer.close()
        self.runtime = None

    @rule()
    def crash_before_write(self) -> None:
        runtime = self._runtime()
        runtime._consumer.poll(5, 0.01)
        runtime._consumer.close()
        self.runtime = None

    def teardown(self) -> None:
        try:
            runtime = self._runtime()
            while runtime.step():
                pass
            handler = runtime.handler
            assert isinstance(handler, FeatureConsumer)
            reader = FeatureReader(self.store, handler.engine, partition_of=self.bus.partition_of)
            want = expected(self.published, NOW_MS, self.lateness_ms)
            for user in USERS:
                state = handler.engine.decode(self.store.get("user", [user]).get(user))
                got = handler.engine.read(user, state, now_ms=NOW_MS, as_of_ms=NOW_MS)
                if user in want:
                    assert got.features == want[user], user
                else:
                    assert not got.found
            assert reader.read_many(list(USERS))
            runtime.close()
        finally:
            self.store.close()
            self.bus.close()
            shutil.rmtree(self.dir, ignore_errors=True)


FeatureStream.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestFeatureStream = FeatureStream.TestCase

"""Property test: any interleaving of signals, erasures, consumer crashes, late and replayed
events leaves no data of an erased user, from before its erasure, in any store."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hypothesis.strategies as st
import msgspec
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from headwater.application import Application, consumer_named
from headwater.bus import Message
from headwater.config import Settings
from headwater.contract.signal import Signal, encode_signal
from headwater.runtime import ConsumerRuntime
from tests.erasure.scan import dead_letter_counts

USERS = ("ann", "bob", "cyd")


class ErasureInterleavings(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.settings = Settings.from_env(self.dir / "hw")
        self.svc = Application(self.settings)
        self.svc.register_shipped_contracts()
        # Only these two consumers run here: requests wait for their stores alone.
        self.svc.orchestrator.expected = (
            *consumer_named("features").participants,
            *consumer_named("platform-erasure").participants,
        )
        _, self.key = self.svc.keys.create("web")
        self.seq = itertools.count()
        self.erased_at: dict[str, datetime] = {}
        self.requests: dict[str, str] = {}
        self.runtimes: dict[str, ConsumerRuntime | None] = {"features": None, "platform": None}
        # Starting the consumers registers them as participants, as in production.
        self._runtime("features")
        self._runtime("platform")

    def _runtime(self, name: str) -> ConsumerRuntime:
        runtime = self.runtimes[name]
        if runtime is None:
            runtime = self.svc.consumer("features" if name == "features" else "platform-erasure")
            runtime.poll_timeout = 0.01
            runtime.batch_size = 9
            self.runtimes[name] = runtime
        return runtime

    @rule(user=st.sampled_from(USERS), n=st.integers(1, 6), ago=st.integers(1, 600))
    def publish(self, user: str, n: int, ago: int) -> None:
        if user in self.erased_at:
            return  # erased users only send late events below
        now = datetime.now(UTC)
        events = [
            {
                "event_id": f"e{next(self.seq)}",
                "event_type": "view",
                "user_id": user,
                "item_id": "i1",
                "surface": "web",
                "timestamp": (now - timedelta(seconds=ago)).isoformat(),
                "payload": {},
            }
            for _ in range(n)
        ]
        self.svc.ingestor.ingest(msgspec.json.encode(events), self.key)

    @rule(user=st.sampled_from(USERS))
    def erase(self, user: str) -> None:
        if user not in self.erased_at:
            record = self.svc.orchestrator.request(
                user, legal_basis="gdpr-art17", requested_by="test"
            )
            self.erased_at[user] = datetime.fromisoformat(record.received_at)
            self.requests[user] = record.request_id

    @rule(user=st.sampled_from(USERS), through_gateway=st.booleans())
    def late_event_of_erased_user(self, user: str, through_gateway: bool) -> None:
        if user not in self.erased_at:
            return
        ts = self.erased_at[user] - timedelta(seconds=30)
        event_id = f"late{next(self.seq)}"
        if through_gateway:
            body = [
                {
                    "event_id": event_id,
                    "event_type": "view",
                    "user_id": user,
                    "item_id": "i2",
                    "surface": "web",
                    "timestamp": ts.isoformat(),
                    "payload": {},
                }
            ]
            outcome = self.svc.ingestor.ingest(msgspec.json.encode(body), self.key)
            assert outcome.rejected == 1
            assert outcome.results[0].rule == "user_erased"
        else:  # replayed from a dead letter or a producer that bypassed the gateway
            sig = Signal(
                event_id=event_id,
                event_type="view",
                user_id=user,
                surface="web",
                timestamp=ts,
                item_id="i2",
                received_at=datetime.now(UTC),
            )
            self.svc.bus.publish([Message(user, encode_signal(sig))])

    @rule(which=st.sampled_from(["features", "platform"]), steps=st.integers(1, 3))
    def consume(self, which: str, steps: int) -> None:
        for _ in range(steps):
            self._runtime(which).step()

    @rule(which=st.sampled_from(["features", "platform"]))
    def crash_before_commit(self, which: str) -> None:
        runtime = self._runtime(which)

        def killed(_positions: object) -> None:
            raise SystemExit("killed")

        runtime._consumer.commit = killed  # type: ignore[method-assign]
        with contextlib.suppress(SystemExit):
            runtime.step()
        runtime._consumer.close()
        self.runtimes[which] = None

    @rule()
    def orchestrate(self) -> None:
        self.svc.orchestrator.tick()

    @invariant()
    def no_row_of_an_erased_user_predates_its_erasure(self) -> None:
        engine = self.svc.features.engine
        for user, at in self.erased_at.items():
            row = self.svc.online.get("user", [user]).get(user)
            if row is None:
                continue
            confirmed = any(
                t.participant == "online-features" and t.status == "confirmed"
                for t in self.svc.ledger.get(self.requests[user]).tasks
            )
            earliest = engine.earliest(engine.decode(row))
            if confirmed:
                assert earliest is not None
                assert earliest > at.timestamp() * 1000, f"{user}'s old data came back"

    def teardown(self) -> None:
        try:
            for _ in range(3):
                for name in ("features", "platform"):
                    runtime = self._runtime(name)
                    while runtime.step():
                        pass
                self.svc.orchestrator.tick()
            bus = self.svc.bus
            for user, at in self.erased_at.items():
                limit = at.timestamp()
                assert self.svc.online.count("user", [user]) == 0, user
                assert self.svc.dedupe.count_user(user) == 0, user
                assert dead_letter_counts(self.svc.dead_letters, [user]) == {user: 0}, user
                counted = bus.count_keys(
                    {
                        user: lambda r, lim=limit: (  # type: ignore[misc]
                            r.kind == "signal"
                            and msgspec.msgpack.decode(r.value)["timestamp"].timestamp() <= lim
                        )
                    }
                )
                assert counted is not None
                old = counted[user]
                assert old == 0, f"{user}: {old} old records still on the bus"
            for rid in self.svc.ledger.request_ids():
                assert self.svc.ledger.get(rid).status == "completed", rid
            for user in set(USERS) - set(self.erased_at):
                sent = self.svc.dedupe.count_user(user)
                assert self.svc.online.count("user", [user]) == (1 if sent else 0)
        finally:
            for runtime in self.runtimes.values():
                if runtime is not None:
                    runtime.close()
            self.svc.close()
            shutil.rmtree(self.dir, ignore_errors=True)


ErasureInterleavings.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestErasureInterleavings = ErasureInterleavings.TestCase

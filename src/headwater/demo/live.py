"""The live demo: six teams publish through the gateway while features update.

Each team has its own scoped API key and publishes through the producer SDK, a
share of its events broken the way real producers break them. A known user's
journey runs alongside, so the demo can show that user's features and freshness.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from headwater.access.keys import ApiKeys
from headwater.client import HeadwaterClient, RejectedEvent, build_event
from headwater.demo.traffic import TEAMS, Traffic

__all__ = ["DemoProgress", "TeamTraffic", "publish_journey"]

JOURNEY_USER = "demo-user-42"


class DemoProgress(msgspec.Struct):
    """Running totals of the demo's publishing."""

    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    reasons: dict[str, int] = {}
    examples: dict[str, dict[str, str]] = {}


class TeamTraffic:
    """Six teams publishing at a target total rate until stopped."""

    def __init__(
        self,
        keys: ApiKeys,
        url: str,
        *,
        rate: float = 4000.0,
        invalid_rate: float = 0.03,
        seed: int = 7,
        batch: int = 200,
    ) -> None:
        self.url = url
        self.rate = rate
        self.batch = batch
        self.progress = DemoProgress()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._keys: dict[str, str] = {}
        for team, (surface, mix) in TEAMS.items():
            secret, _ = keys.create(
                team,
                event_types=tuple(t for t, _ in mix),
                surfaces=(surface,),
                description="demo producer",
            )
            self._keys[team] = secret
        self._seed = seed
        self._invalid_rate = invalid_rate

    def _record(self, rejected: RejectedEvent, team: str) -> None:
        with self._lock:
            self.progress.reasons[rejected.rule] = self.progress.reasons.get(rejected.rule, 0) + 1
            self.progress.examples.setdefault(
                rejected.rule,
                {
                    "team": team,
                    "event_id": str(rejected.event_id),
                    "field": rejected.field,
                    "message": rejected.message,
                },
            )

    def _run(self, team: str, share: float, seed: int) -> None:
        traffic = Traffic(seed=seed, invalid_rate=self._invalid_rate)
        client = HeadwaterClient(
            self.url, self._keys[team], on_rejection=lambda r: self._record(r, team)
        )
        interval = self.batch / max(1.0, self.rate * share)
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                report = client.publish(traffic.batch(self.batch, team))
                with self._lock:
                    self.progress.accepted += report.accepted
                    self.progress.rejected += len(report.rejected)
                    self.progress.duplicates += report.duplicates
                next_at += interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            client.close()

    def start(self) -> None:
        """Start one publishing thread per team (web and mobile carry most traffic)."""
        weights = Counter({t: 3 if t in ("web", "ios", "android") else 1 for t in TEAMS})
        total = sum(weights.values())
        for i, team in enumerate(TEAMS):
            t = threading.Thread(
                target=self._run,
                args=(team, weights[team] / total, self._seed + i),
                name=f"team-{team}",
                daemon=True,
            )
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop publishing and wait for the teams' last batches."""
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def key(self, team: str) -> str:
        """A team's API key."""
        return self._keys[team]


def publish_journey(
    url: str, key: str, *, user_id: str = JOURNEY_USER, on_step: Callable[[str], None] | None = None
) -> list[str]:
    """A short web journey of one user: views, a click, another view. Its event ids."""
    steps = [("view", "i000101"), ("view", "i000202"), ("click", "i000202"), ("view", "i000303")]
    ids = []
    with HeadwaterClient(url, key) as client:
        for etype, item in steps:
            event = build_event(
                event_type=etype,
                user_id=user_id,
                surface="web",
                item_id=item,
                timestamp=datetime.now(UTC),
                payload={"position": 1},
            )
            report = client.publish([event])
            if report.rejected:
                raise RuntimeError(f"journey event rejected: {report.rejected[0].message}")
            ids.append(str(event["event_id"]))
            if on_step is not None:
                on_step(f"{etype} {item}")
            time.sleep(0.05)
    return ids

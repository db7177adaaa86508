"""Freshness SLOs per producer team and event type.

The streaming consumer counts, per minute, how many events of each (producer, event
type) became readable within the type's freshness budget, and stores those counts in
the online store beside the rows (namespace ``slo``), so every API process sees the same
figures. Compliance over a window is within-budget / total; the burn rate is how fast
the error budget (1 - objective) is being spent: 1.0 spends it exactly over the window.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import msgspec

from headwater.contract.definition import DEFAULT_FRESHNESS_BUDGET_S
from headwater.metrics import FRESHNESS_EVENTS, SLO_BREACH
from headwater.online.base import OnlineStore

__all__ = ["SLO_NAMESPACE", "SloMonitor", "SloRecorder", "slo_report"]

SLO_NAMESPACE = "slo"
log = logging.getLogger("headwater.slo")
_enc = msgspec.msgpack.Encoder().encode
_dec = msgspec.msgpack.Decoder(list[float]).decode
_KEEP_MINUTES = 24 * 60 + 5


class SloRecorder:
    """Per-minute freshness counts kept by one consumer instance."""

    def __init__(self, budgets: Callable[[], Mapping[str, float]]) -> None:
        self.budgets = budgets
        self.instance = uuid.uuid4().hex[:8]  # members of a group never share a key
        self._minutes: dict[tuple[int, str, str], list[float]] = {}
        self._last_prune = time.monotonic()

    def observe(
        self, producer: str, event_type: str, seconds: float, now: float, count: int = 1
    ) -> None:
        """``count`` events became readable ``seconds`` after they were accepted."""
        within = (
            count if seconds <= self.budgets().get(event_type, DEFAULT_FRESHNESS_BUDGET_S) else 0
        )
        self.observe_counts(
            producer, event_type, now=now, total=count, within=within, oldest=seconds
        )

    def observe_counts(
        self, producer: str, event_type: str, *, now: float, total: int, within: int, oldest: float
    ) -> None:
        """``total`` events became readable, ``within`` of them inside the budget, the
        oldest ``oldest`` seconds after it was accepted."""
        if within:
            FRESHNESS_EVENTS.labels(producer, event_type, "true").inc(within)
        if total > within:
            FRESHNESS_EVENTS.labels(producer, event_type, "false").inc(total - within)
        key = (int(now // 60), producer, event_type)
        acc = self._minutes.get(key)
        if acc is None:
            acc = self._minutes[key] = [0.0, 0.0, 0.0]
        acc[0] += total
        acc[1] += within
        acc[2] = max(acc[2], oldest)

    def rows(self) -> dict[str, bytes]:
        """The counts of the current and previous minutes, as rows to store."""
        current = int(time.time() // 60)
        out = {
            f"{m}|{p}|{t}|{self.instance}": _enc(acc) for (m, p, t), acc in self._minutes.items()
        }
        # Older minutes are final once written; keep memory to the last two.
        for key in [k for k in self._minutes if k[0] < current - 1]:
            del self._minutes[key]
        return out

    def prune(self, store: OnlineStore) -> None:
        """Drop stored minutes older than a day (at most once an hour)."""
        if time.monotonic() - self._last_prune < 3600:
            return
        self._last_prune = time.monotonic()
        oldest = int(time.time() // 60) - _KEEP_MINUTES
        stale = [k for k in store.keys(SLO_NAMESPACE) if int(k.split("|", 1)[0]) < oldest]
        if stale:
            store.delete(SLO_NAMESPACE, stale)


def slo_report(
    store: OnlineStore,
    budgets: Mapping[str, float],
    *,
    window_s: float = 3600.0,
    objective: float = 0.99,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Compliance and burn per (producer, event type) over the window."""
    now = now or time.time()
    first = int((now - window_s) // 60)
    keys = [k for k in store.keys(SLO_NAMESPACE) if int(k.split("|", 1)[0]) >= first]
    totals: dict[tuple[str, str], list[float]] = {}
    for key, raw in store.get(SLO_NAMESPACE, keys).items():
        _minute, producer, etype, _instance = key.split("|")
        total, ok, worst = _dec(raw)
        acc = totals.setdefault((producer, etype), [0.0, 0.0, 0.0])
        acc[0] += total
        acc[1] += ok
        acc[2] = max(acc[2], worst)
    report = []
    for (producer, etype), (total, ok, worst) in sorted(totals.items()):
        compliance = ok / total if total else 1.0
        burn = (1 - compliance) / (1 - objective) if objective < 1 else 0.0
        report.append(
            {
                "producer": producer,
                "event_type": etype,
                "budget_s": budgets.get(etype, DEFAULT_FRESHNESS_BUDGET_S),
                "objective": objective,
                "window_s": window_s,
                "events": int(total),
                "within_budget": int(ok),
                "compliance": round(compliance, 5),
                "burn_rate": round(burn, 3),
                "max_freshness_s": round(worst, 3),
                "breached": compliance < objective,
            }
        )
    return report


class SloMonitor:
    """Evaluates the SLOs periodically and fires an alert when a budget is breached."""

    def __init__(
        self,
        store: OnlineStore,
        budgets: Callable[[], Mapping[str, float]],
        *,
        window_s: float = 300.0,
        objective: float = 0.99,
        min_events: int = 20,
        webhook_url: str | None = None,
        as_of_age: Callable[[], float | None] | None = None,
    ) -> None:
        self.store = store
        self.budgets = budgets
        self.window_s = window_s
        self.objective = objective
        self.min_events = min_events
        self.webhook_url = webhook_url
        self.as_of_age = as_of_age
        self.breached: set[tuple[str, str]] = set()
        self.alerts: list[dict[str, Any]] = []

    def evaluate(self) -> list[dict[str, Any]]:
        """One evaluation; alerts for newly breached (producer, type) pairs."""
        report = slo_report(
            self.store, self.budgets(), window_s=self.window_s, objective=self.objective
        )
        age = self.as_of_age() if self.as_of_age else None
        now_breached: set[tuple[str, str]] = set()
        for row in report:
            key = (row["producer"], row["event_type"])
            lagging = age is not None and age > row["budget_s"]
            if (row["breached"] and row["events"] >= self.min_events) or lagging:
                now_breached.add(key)
                if key not in self.breached:
                    self._alert({**row, "as_of_age_s": age, "lagging": lagging})
            SLO_BREACH.labels(*key).set(1 if key in now_breached else 0)
        self.breached = now_breached
        return report

    def _alert(self, row: dict[str, Any]) -> None:
        message = (
            f"freshness SLO breached: {row['producer']}/{row['event_type']} "
            f"{row['compliance']:.2%} within {row['budget_s']:g}s over "
            f"{row['window_s']:g}s (objective {row['objective']:.0%})"
        )
        alert = {"message": message, **row}
        self.alerts.append(alert)
        log.error(message, extra={"slo": row})
        if self.webhook_url:
            try:
                httpx.post(self.webhook_url, json=alert, timeout=5.0)
            except httpx.HTTPError as exc:
                log.warning("SLO alert webhook failed: %s", exc)

    def run(self, stop: threading.Event, interval_s: float = 15.0) -> None:
        """Evaluate until ``stop`` is set."""
        while not stop.wait(interval_s):
            try:
                self.evaluate()
            except Exception:  # keep watching: one failed pass must not stop alerts
                log.exception("SLO evaluation failed")

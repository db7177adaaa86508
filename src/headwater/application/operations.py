"""What the operators of a deployment see: consumer status and lag, the state of the
feature definitions, the freshness SLO watch, the backends' readiness and where they are.

``Application``'s ``status``, ``features_status``, ``lag_groups``, ``slo_monitor``,
``readiness``, ``check_ready`` and ``describe`` call these.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from headwater._url import redacted
from headwater.bus.base import group_lag
from headwater.errors import BackendUnavailableError
from headwater.runtime.presence import ConsumerPresence
from headwater.slo import SloMonitor

if TYPE_CHECKING:
    from headwater.application.root import Application

__all__ = [
    "check_ready",
    "describe",
    "features_status",
    "lag_groups",
    "readiness",
    "slo_monitor",
    "status",
]


def status(app: Application) -> dict[str, object]:
    """Every consumer instance heard from and each consumer group's lag."""
    instances = ConsumerPresence(app.control).instances()
    groups = []
    for group in app.lag_groups:
        events, seconds = group_lag(app.bus.lag(group))
        groups.append(
            {
                "group": group,
                "lag_events": events,
                "lag_seconds": seconds,
                "instances": [msgspec.to_builtins(i) for i in instances if i.group == group],
            }
        )
    return {"groups": groups, "features": features_status(app)}


def features_status(app: Application) -> dict[str, object]:
    """The current feature definitions, their backfills and the groups' switches."""
    versions = app.feature_versions
    current = versions.current()
    version = current.version if current else 0
    return {
        "version": version,
        "definitions": versions.progress(),
        "backfills": [
            msgspec.to_builtins(r)
            for r in app.feature_backfills.runs(("computing", "staged", "failed"))
        ],
        "switches": [msgspec.to_builtins(s) for s in versions.switches(version)],
    }


def slo_monitor(app: Application) -> SloMonitor:
    """The freshness SLO watch over the features the read API serves."""
    reader = app.features

    def as_of_age() -> float | None:
        positions = reader.store.positions(reader.group)
        if not positions:
            return None
        return max(0.0, time.time() - min(p.as_of_ms for p in positions.values()) / 1000)

    return SloMonitor(
        reader.store,
        lambda: reader.engine.budgets_s,
        webhook_url=app.settings.alert_webhook,
        as_of_age=as_of_age,
    )


def readiness(app: Application) -> dict[str, object]:
    """Each backend asked now: whether it answered, how fast, or its error."""
    checks: dict[str, Callable[[], object]] = {
        "control": lambda: app.control.execute("SELECT 1"),
        "bus": lambda: app.bus.lag(app.lag_groups[0]),
        "online": lambda: app.online.positions("features"),
        "dedupe": lambda: app.dedupe.seen(["readiness-probe"]),
    }
    backends: dict[str, dict[str, object]] = {}
    for name, check in checks.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure makes the process unready
            backends[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        else:
            backends[name] = {"ok": True, "ms": round((time.perf_counter() - started) * 1e3, 2)}
    ready = all(b["ok"] for b in backends.values())
    return {"ready": ready, "backends": backends, "where": app.describe()}


def check_ready(app: Application) -> None:
    """Raise ``BackendUnavailableError`` naming the first backend that does not answer."""
    report = app.readiness()
    backends = report["backends"]
    assert isinstance(backends, dict)
    where = app.describe()
    for name, state in backends.items():
        if not state["ok"]:
            raise BackendUnavailableError(
                f"the {name} backend at {where.get(name, '?')} does not answer: {state['error']}"
            )


def lag_groups(app: Application) -> tuple[str, ...]:
    """``HEADWATER_LAG_GROUPS``, else every consumer group of the registry."""
    from headwater.application.consumers import CONSUMERS

    return app.settings.lag_groups or tuple(spec.group for spec in CONSUMERS)


def describe(app: Application) -> dict[str, object]:
    """Where each backend is (credentials redacted)."""
    settings = app.settings
    return {
        "control": redacted(settings.control_url),
        "bus": redacted(settings.bus_url),
        "dedupe": redacted(settings.dedupe_url),
        "online": redacted(settings.online_url),
    }

"""What the dashboard shows of the present, computed once per ``ttl_s`` for every tab.

The view reads the backends (SLO minutes, lag, dead letters, the erasure ledger, the
feature definitions); a tab that asks within ``ttl_s`` of the last computation gets the
same bytes, so ten open tabs cost what one does. Open erasure requests come first with
their stores; completed ones are summarised in one line each and never crowd them out.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import msgspec

from headwater.application import Application
from headwater.bus.base import group_lag
from headwater.gateway.observe_answers import DashboardLive
from headwater.slo import slo_report

__all__ = ["LiveView", "consumers_view", "deletions_view"]

#: Requests shown: every open one up to this many (overdue first), and the latest completed.
OPEN_SHOWN = 20
COMPLETED_SHOWN = 5
#: The freshness table's window.
SLO_WINDOW_S = 300.0
#: The ingestion table's window.
INGEST_WINDOW_S = 60


def consumers_view(svc: Application) -> dict[str, Any]:
    """Lag per group and partition, the streaming features' as_of per partition, and the
    dead-letter store (what ``/v1/stats/consumers`` answers)."""
    groups = []
    for group in svc.lag_groups:
        parts = svc.bus.lag(group)
        events, seconds = group_lag(parts)
        groups.append(
            {
                "group": group,
                "lag_events": events,
                "lag_seconds": seconds,
                "partitions": [
                    {
                        "partition": p.partition,
                        "committed": p.committed,
                        "end": p.end,
                        "lag_events": p.lag_events,
                        "lag_seconds": p.lag_seconds,
                    }
                    for p in parts
                ],
            }
        )
    now_ms = time.time() * 1000
    positions = svc.online.positions(svc.features.group)
    as_of = [
        {
            "partition": p,
            "as_of_ms": pos.as_of_ms,
            "age_s": round(max(0.0, now_ms - pos.as_of_ms) / 1000, 3),
        }
        for p, pos in sorted(positions.items())
    ]
    letters = svc.dead_letters.list(limit=20)
    return {
        "groups": groups,
        "features_as_of": as_of,
        "dead_letters": {g: svc.dead_letters.count(g) for g in svc.lag_groups},
        "dead_letters_total": svc.dead_letters.count(),
        "recent_dead_letters": [
            {
                "id": d.id,
                "kind": d.record.kind,
                "error": d.error,
                "attempts": d.attempts,
                "failed_at": d.failed_at,
            }
            for d in letters
        ],
    }


def deletions_view(svc: Application) -> dict[str, Any]:
    """Open requests with each store (overdue or failed first), the latest completed in
    one line each, and the counts; no user id, no evidence."""
    ledger = svc.ledger
    opened = []
    for r in ledger.open_requests(limit=OPEN_SHOWN):
        stores = [
            {
                "participant": t.participant,
                "status": t.status,
                "attempts": t.attempts,
                "due_at": t.due_at,
                "confirmed_at": t.confirmed_at,
                "method": t.method,
                "rows_removed": t.rows_removed,
            }
            for t in r.tasks
        ]
        opened.append(
            {
                "request_id": r.request_id,
                "status": r.status,
                "received_at": r.received_at,
                "deadline": r.deadline,
                "overdue": any(s["status"] in ("overdue", "failed") for s in stores),
                "confirmed": sum(s["status"] == "confirmed" for s in stores),
                "stores": stores,
            }
        )
    opened.sort(key=lambda r: (not r["overdue"], r["deadline"]))
    completed = []
    for request_id in ledger.request_ids(status="completed", limit=COMPLETED_SHOWN):
        record = ledger.get(request_id)
        completed.append(
            {
                "request_id": record.request_id,
                "completed_at": record.completed_at,
                "deadline": record.deadline,
                "late": bool(record.completed_at and record.completed_at > record.deadline),
                "confirmed": sum(t.status == "confirmed" for t in record.tasks),
                "stores": len(record.tasks),
            }
        )
    return {"counts": ledger.counts(), "open": opened, "completed": completed}


def _compute(svc: Application) -> dict[str, Any]:
    return {
        "at": time.time(),
        "ingestion": svc.ingestor.stats.snapshot(INGEST_WINDOW_S),
        "slo": slo_report(svc.online, svc.features.engine.budgets_s, window_s=SLO_WINDOW_S),
        "consumers": consumers_view(svc),
        "deletions": deletions_view(svc),
        "features": svc.features_status(),
    }


class LiveView:
    """The present for the dashboard, recomputed at most once per ``ttl_s``."""

    def __init__(self, application: Application, *, ttl_s: float = 2.0) -> None:
        self.application = application
        self.ttl_s = ttl_s
        self.computed = 0  # how many times the backends were read (tests count it)
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._encoded = b""

    def encoded(self) -> bytes:
        """The view as JSON: the cached one while fresh, else computed now (one caller
        computes; the others wait for its answer)."""
        with self._lock:
            if time.monotonic() - self._at >= self.ttl_s:
                # Converted to the documented structure: a key it lacks fails at once.
                view = msgspec.convert(_compute(self.application), DashboardLive)
                self._encoded = msgspec.json.encode(view)
                self._at = time.monotonic()
                self.computed += 1
            return self._encoded

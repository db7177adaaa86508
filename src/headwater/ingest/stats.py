"""Recent ingestion per producer team, for the dashboard: rates, top rejection reasons
and fields, and an example rejected event of each team, masked.

Kept in the memory of each gateway process (a minute-bucketed window); Prometheus
aggregates the counters across gateways, this serves the live view. The example keeps
the event's shape and nothing of its values: ids are replaced by their length and
payload values by their JSON type, and the validator's message (which may quote a
value) is not kept. So nothing here is personal data, and erasure has nothing to
reach (``tests/gateway/test_security.py`` checks it).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from typing import Any

import msgspec

from headwater.contract.validator import Rejection

__all__ = ["IngestStats", "mask"]

_WINDOW_S = 300


class _Team:
    __slots__ = ("buckets", "example", "fields", "reasons")

    def __init__(self) -> None:
        # (second, accepted, rejected) newest last; a few hundred entries at most.
        self.buckets: deque[list[int]] = deque()
        self.reasons: Counter[str] = Counter()
        self.fields: Counter[tuple[str, str]] = Counter()
        self.example: dict[str, Any] | None = None


class IngestStats:
    """Per-team counts over the last five minutes."""

    def __init__(self) -> None:
        self._teams: dict[str, _Team] = {}
        self._lock = threading.Lock()

    def record(self, team: str, accepted: int, rejections: list[Rejection]) -> None:
        """Count one batch."""
        now = int(time.time())
        with self._lock:
            t = self._teams.get(team)
            if t is None:
                t = self._teams[team] = _Team()
            if t.buckets and t.buckets[-1][0] == now:
                t.buckets[-1][1] += accepted
                t.buckets[-1][2] += len(rejections)
            else:
                t.buckets.append([now, accepted, len(rejections)])
            while t.buckets and t.buckets[0][0] < now - _WINDOW_S:
                t.buckets.popleft()
            for r in rejections:
                t.reasons[r.rule] += 1
                t.fields[r.field, r.rule] += 1
            if rejections:
                r = rejections[-1]
                try:
                    event: Any = msgspec.json.decode(r.raw) if r.raw else None
                except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                    event = None
                t.example = {"event": mask(event), "field": r.field, "rule": r.rule, "at": now}

    def snapshot(self, window_s: int = 60) -> list[dict[str, Any]]:
        """Per team: events/s accepted and rejected over ``window_s``, top reasons, example."""
        now = int(time.time())
        out = []
        with self._lock:
            for team, t in sorted(self._teams.items()):
                recent = [b for b in t.buckets if b[0] > now - window_s]
                accepted = sum(b[1] for b in recent)
                rejected = sum(b[2] for b in recent)
                total = accepted + rejected
                out.append(
                    {
                        "team": team,
                        "accepted_per_s": round(accepted / window_s, 3),
                        "rejected_per_s": round(rejected / window_s, 3),
                        "rejection_rate": round(rejected / total, 4) if total else 0.0,
                        "accepted_total_5m": sum(b[1] for b in t.buckets),
                        "rejected_total_5m": sum(b[2] for b in t.buckets),
                        "top_reasons": t.reasons.most_common(5),
                        "top_fields": [
                            {"field": f, "rule": rule, "count": n}
                            for (f, rule), n in t.fields.most_common(5)
                        ],
                        "example_rejection": t.example,
                    }
                )
        return out


#: Envelope fields that describe the product, not the person: kept when they look like
#: names (an address or a sentence in them is masked like any other value).
_KEPT = frozenset({"event_type", "surface"})
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def mask(value: Any, key: str | None = None) -> Any:
    """The shape of a rejected event without its values: ids become their length, other
    values their JSON type; keys (field names) stay, nested objects are masked alike."""
    if isinstance(value, dict):
        return {str(k)[:64]: mask(v, str(k)) for k, v in list(value.items())[:50]}
    if isinstance(value, list):
        return [mask(v) for v in value[:10]]
    if isinstance(value, str):
        kept = key in _KEPT and _NAME.fullmatch(value)
        return value if kept else f"<string, {len(value)} chars>"
    if value is None:
        return None
    kind = "bool" if isinstance(value, bool) else "number"
    return f"<{kind if isinstance(value, int | float) else type(value).__name__}>"

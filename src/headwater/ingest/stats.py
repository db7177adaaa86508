"""Recent ingestion per producer team, for the dashboard: rates, top rejection reasons
and fields, and an example rejected event of each team, masked.

Kept in the memory of each gateway process (a minute-bucketed window); Prometheus
aggregates the counters across gateways, this serves the live view. The example keeps
the event's shape and nothing of its values: ids are replaced by their length and
payload values by their JSON type, and the validator's message (which may quote a
value) is not kept. Field names are kept only where the contract declares them (the
canonical signal's fields, the event type's payload fields): a name the producer chose
may be anything, an e-mail address included, so it is shown as its length, in the
example and in the top fields alike. So nothing here is personal data, and erasure has
nothing to reach (``tests/observe/test_observability.py::
test_ingestion_stats_have_rates_reasons_and_an_example`` and
``::test_undeclared_field_names_are_masked`` check it).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

import msgspec

from headwater.contract.definition import EventTypeDefinition
from headwater.contract.signal import ENVELOPE_FIELDS, SIGNAL_FIELDS
from headwater.contract.validator import Rejection

__all__ = ["IngestStats", "mask_event", "mask_field"]

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

    def record(
        self,
        team: str,
        accepted: int,
        rejections: list[Rejection],
        *,
        definitions: Mapping[str, EventTypeDefinition],
    ) -> None:
        """Count one batch; ``definitions`` (the registered event types) say which field
        names are declared, and so shown."""
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
                t.fields[mask_field(r.field, r.event_type, definitions), r.rule] += 1
            if rejections:
                r = rejections[-1]
                try:
                    event: Any = msgspec.json.decode(r.raw) if r.raw else None
                except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                    event = None
                t.example = {
                    "event": mask_event(event, definitions),
                    "field": mask_field(r.field, r.event_type, definitions),
                    "rule": r.rule,
                    "at": now,
                }

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
#: The top-level field names headwater declares: the canonical signal and its envelope.
_SIGNAL = frozenset(SIGNAL_FIELDS) | frozenset(ENVELOPE_FIELDS)
_NONE: frozenset[str] = frozenset()
#: How a field name the contract does not declare is shown in the top fields.
UNDECLARED = "<undeclared field>"
_FIELD_NAME = re.compile(r"[^.\[]*")


def _payload_fields(
    event_type: Any, definitions: Mapping[str, EventTypeDefinition]
) -> frozenset[str]:
    definition = definitions.get(event_type) if isinstance(event_type, str) else None
    return frozenset(definition.payload) if definition is not None else _NONE


def mask_event(event: Any, definitions: Mapping[str, EventTypeDefinition]) -> Any:
    """The shape of a rejected event without its values: ids become their length, other
    values their JSON type; field names stay where the contract declares them (the
    signal's, the event type's payload fields) and are shown by their length elsewhere."""
    if not isinstance(event, dict):
        return _mask(event, _NONE)
    payload = _payload_fields(event.get("event_type"), definitions)
    out: dict[str, Any] = {}
    for i, (key, value) in enumerate(list(event.items())[:50]):
        name = str(key)
        if name not in _SIGNAL:
            out[_hidden(name, i)] = _mask(value, _NONE)
        elif name in _KEPT and isinstance(value, str) and _NAME.fullmatch(value):
            out[name] = value
        else:
            out[name] = _mask(value, payload if name == "payload" else _NONE)
    return out


def mask_field(
    path: str, event_type: str | None, definitions: Mapping[str, EventTypeDefinition]
) -> str:
    """A rejection's field path (``payload.rating``, ``user_id``) with a name the
    contract does not declare replaced by ``<undeclared field>``."""
    head, dot, rest = path.partition(".")
    if not path or (head in _SIGNAL and not dot):
        return path
    if head == "payload" and dot:
        name = _FIELD_NAME.match(rest)
        if name is not None and name.group(0) in _payload_fields(event_type, definitions):
            return path
        return f"payload.{UNDECLARED}"
    return UNDECLARED


def _hidden(name: str, index: int) -> str:
    # Numbered: two undeclared names of the same length stay two keys.
    return f"<undeclared field {index + 1}, {len(name)} chars>"


def _mask(value: Any, declared: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {
            (str(k) if str(k) in declared else _hidden(str(k), i)): _mask(v, _NONE)
            for i, (k, v) in enumerate(list(value.items())[:50])
        }
    if isinstance(value, list):
        return [_mask(v, _NONE) for v in value[:10]]
    if isinstance(value, str):
        return f"<string, {len(value)} chars>"
    if value is None:
        return None
    kind = "bool" if isinstance(value, bool) else "number"
    return f"<{kind if isinstance(value, int | float) else type(value).__name__}>"

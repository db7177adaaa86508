"""A user's feature states at its labels' times, replayed from archived signals.

The streaming consumer's pass (``FeatureEngine.apply``) applied to one user's archived
signals in the order the stream applied them, the state taken at each label's time with
exactly the signals timestamped at or before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from headwater.features.engine import FeatureEngine

__all__ = ["ArchivedSignal", "by_user", "user_snapshots"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_decode_json = msgspec.json.Decoder(dict[str, Any]).decode


class ArchivedSignal:
    """An archived signal as the feature pass reads it: the payload, kept as JSON text in
    the archive, is decoded only when a feature reads it."""

    __slots__ = ("_payload", "event_id", "event_type", "item_id", "surface", "timestamp")

    def __init__(  # noqa: PLR0917 - built once per archived row: positional on the hot path
        self,
        event_id: str,
        event_type: str,
        surface: str,
        timestamp: datetime,
        item_id: str | None,
        payload: str | None,
    ) -> None:
        self.event_id = event_id
        self.event_type = event_type
        self.surface = surface
        self.timestamp = timestamp
        self.item_id = item_id
        self._payload: Any = payload

    @property
    def payload(self) -> dict[str, Any]:
        """The payload as a dict (decoded once)."""
        value = self._payload
        if isinstance(value, dict):
            return value
        decoded: dict[str, Any] = _decode_json(value) if value else {}
        self._payload = decoded
        return decoded


def user_snapshots(
    engine: FeatureEngine,
    signals: list[ArchivedSignal],
    times: list[int],
    labels: list[tuple[int, int]],
) -> Iterator[tuple[int, int, dict[str, Any], bool]]:
    """``(row, time_us, state, replayed)`` for each label ``(row, time_us)`` of one user,
    in time order; ``signals`` are in the order the stream applied them, ``times``
    their event times (µs). The state holds exactly the signals timestamped at or
    before the label, applied in that order."""
    by_time = sorted(range(len(signals)), key=times.__getitem__)
    state: dict[str, Any] = {}
    newest = -1  # the last signal (in applied order) the state holds
    k = 0
    for row, at in labels:
        fresh: list[int] = []
        while k < len(by_time) and times[by_time[k]] <= at:
            fresh.append(by_time[k])
            k += 1
        replayed = False
        if fresh:
            fresh.sort()
            if fresh[0] > newest:
                engine.apply(state, [signals[i] for i in fresh])
            else:
                # A signal applied after one the state holds arrived first: the stream
                # applied it earlier, so the user is replayed from the start.
                state = {}
                engine.apply(state, [signals[i] for i in sorted(by_time[:k])])
                replayed = True
            newest = max(newest, fresh[-1])
        yield row, at, state, replayed


def by_user(
    reader: Any,
) -> Iterator[tuple[str, list[ArchivedSignal], list[int], list[tuple[int, int]]]]:
    """The sorted stream of signals and labels, one user at a time."""
    user: str | None = None
    signals: list[ArchivedSignal] = []
    times: list[int] = []
    labels: list[tuple[int, int]] = []
    for batch in reader:
        cols = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        users, tags, _arrival, ats, ids, types, surfaces, items, payloads, rows = cols
        for i, u in enumerate(users):
            if u != user:
                if user is not None:
                    yield user, signals, times, labels
                user, signals, times, labels = u, [], [], []
            at = ats[i]
            if tags[i]:
                labels.append((rows[i], at))
            else:
                when = _EPOCH + timedelta(microseconds=at)
                signals.append(
                    ArchivedSignal(ids[i], types[i], surfaces[i], when, items[i], payloads[i])
                )
                times.append(at)
    if user is not None:
        yield user, signals, times, labels

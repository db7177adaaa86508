"""Read a user's features at request time, stamped with as_of and age, stale when late."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

import msgspec

from headwater.batch.namespaces import USER_BATCH
from headwater.features.engine import FeatureEngine
from headwater.features.live import LiveDefinitions
from headwater.features.versions import USER_NAMESPACE
from headwater.online.base import OnlineStore, Position
from headwater.wire import UserFeatures

__all__ = ["FeatureReader"]


class FeatureReader:
    """Turns stored rows into feature answers.

    ``as_of`` is the time up to which the consumer has processed the user's partition:
    when the consumer lags or stops, as_of stops moving, the age grows past the event
    types' budgets and the answer says stale. ``batch`` names the fields of the batch's
    user row (declared batch features and the batch's aggregates): an answer holds those
    selected, with the row's own as_of. The row is read only when the selection names
    one of them (or selects nothing), so a read of streaming features costs no more.
    """

    def __init__(
        self,
        store: OnlineStore,
        engine: FeatureEngine,
        *,
        partition_of: Callable[[str], int],
        group: str = "features",
        positions_ttl_s: float = 0.05,
        definitions: LiveDefinitions | None = None,
        batch: Collection[str] = (),
    ) -> None:
        self.store = store
        self.engine = engine
        #: The control plane's feature definitions, followed without a restart.
        self.definitions = definitions
        current = definitions.current if definitions is not None else None
        #: The user rows' namespace (another after a rebuild's switch).
        self.namespace = current.namespace if current is not None else USER_NAMESPACE
        self.partition_of = partition_of
        self.group = group
        self.positions_ttl_s = positions_ttl_s
        self.batch = frozenset(batch)
        self._positions: dict[int, Position] = {}
        self._positions_at = 0.0

    def _current_positions(self) -> dict[int, Position]:
        # Positions change a few times a second: a short cache keeps reads to one query.
        now = time.monotonic()
        if now - self._positions_at > self.positions_ttl_s:
            self._positions = self.store.positions(self.group)
            self._positions_at = now
        return self._positions

    def read(self, user_id: str, select: Sequence[str] | None = None) -> UserFeatures:
        """One user's features."""
        return self.read_many([user_id], select)[0]

    def read_many(
        self, user_ids: Sequence[str], select: Sequence[str] | None = None
    ) -> list[UserFeatures]:
        """Several users' features, in the order asked."""
        live = self.definitions
        if live is not None and live.refresh():
            self.engine = live.engine(stream=False, like=self.engine)
            if live.current is not None:
                self.namespace = live.current.namespace
        unique = list(dict.fromkeys(user_ids))
        rows = self.store.get(self.namespace, unique)
        wanted = self.batch if select is None else self.batch.intersection(select)
        batch_rows = self.store.get(USER_BATCH, unique) if wanted else {}
        positions = self._current_positions()
        now_ms = int(time.time() * 1000)
        out = []
        for user in user_ids:
            pos = positions.get(self.partition_of(user))
            state = self.engine.decode(rows.get(user))
            answer = self.engine.read(
                user,
                state,
                now_ms=now_ms,
                as_of_ms=pos.as_of_ms if pos else None,
                select=select,
            )
            data = batch_rows.get(user)
            if data:
                doc = _batch_doc(data)
                answer.batch_as_of = doc.pop("as_of", None)
                answer.batch = {k: v for k, v in doc.items() if k in wanted}
            out.append(answer)
        return out


def _batch_doc(data: bytes) -> dict[str, Any]:
    try:
        doc = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return {}  # a row written by another version: leave it out rather than fail the read
    return doc if isinstance(doc, dict) else {}

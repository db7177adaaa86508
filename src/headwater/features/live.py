"""The definitions a running consumer or reader uses, following the control plane.

Each polls the head row (one indexed read) at most once per ``interval_s``; when the
version or revision moved, it reads the current version and builds the engine for it.
The stream computes the features that are ready (not backfilling); a reader names every
feature of the version and answers the backfilling ones as such.
"""

from __future__ import annotations

import time
from collections.abc import Collection

from headwater.features.backfills import BackfillLedger, BackfillRun
from headwater.features.engine import FeatureEngine
from headwater.features.versions import FeatureVersion, FeatureVersions

__all__ = ["POLL_INTERVAL_S", "LiveDefinitions"]

#: How often a running consumer or reader asks the control plane for a new version.
POLL_INTERVAL_S = 1.0


class LiveDefinitions:
    """The current feature definitions as engines, refreshed when the control plane moves."""

    def __init__(
        self,
        versions: FeatureVersions,
        template: FeatureEngine,
        *,
        interval_s: float = POLL_INTERVAL_S,
        ledger: BackfillLedger | None = None,
    ) -> None:
        self.versions = versions
        #: Backfill runs (a consumer takes the staged ones over); None: not followed.
        self.ledger = ledger
        self.staged: list[BackfillRun] = []
        #: Lateness bound, budgets and form of every engine built here.
        self.template = template
        self.interval_s = interval_s
        self.head = (0, 0)
        self.current: FeatureVersion | None = None
        #: Counts the changes ``refresh`` saw: an engine built at one generation is stale
        #: at a later one, whoever called ``refresh`` in between.
        self.generation = 0
        self._polled = -float("inf")
        self.refresh(force=True)

    def refresh(self, *, force: bool = False) -> bool:
        """Poll the head (at most once per interval unless ``force``); True when the
        version or a definition's state changed since the last refresh."""
        now = time.monotonic()
        if not force and now - self._polled < self.interval_s:
            return False
        self._polled = now
        head = self.versions.head()
        if head == self.head and self.current is not None:
            return False
        current = self.versions.current()
        if current is None:
            return False
        changed = self.current is None or (current.version, current.revision) != (
            self.current.version,
            self.current.revision,
        )
        self.head = head
        self.current = current
        if changed:
            self.generation += 1
        if self.ledger is not None:
            self.staged = self.ledger.runs(("staged",))
        return changed

    def engine(
        self,
        *,
        stream: bool,
        like: FeatureEngine | None = None,
        taken: Collection[tuple[str, int]] = (),
    ) -> FeatureEngine:
        """The engine of the current version: the stream's computes the ready features
        and those it ``taken`` over (name, definition version) from a backfill; a
        reader's declares every feature and answers the backfilling ones as such.
        ``like`` (the engine it replaces) lends its freshness budgets and counters."""
        current = self.current
        base = like or self.template
        if current is None:
            return base
        waiting = {n for n in current.backfilling if (n, current.defined_in[n]) not in set(taken)}
        return base.replaced(
            specs=tuple(s for s in current.specs if s.name not in waiting)
            if stream
            else current.specs,
            version=current.version,
            defined_in=current.defined_in,
            backfilling=() if stream else current.backfilling,
        )

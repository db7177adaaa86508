"""How a running feature consumer follows the control plane's feature definitions.

Before each batch (and when idle) the consumer asks here; at most once a second the
control plane is polled. A new version, or a definition whose backfill completed,
changes the engine from that batch on, and the switch is recorded with the consumer's
positions: the first record of the batch per partition. A staged backfill or rebuild
run is taken over here, between two batches (``handover``), and a rebuild's namespace
becomes the one the rows are written to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from headwater.bus.base import Record
from headwater.features.backfills import BackfillRun
from headwater.features.engine import FeatureEngine
from headwater.features.handover import Superseded, TailReader, take_over
from headwater.features.live import LiveDefinitions
from headwater.features.versions import USER_NAMESPACE
from headwater.online.base import OnlineStore, Position

__all__ = ["DefinitionFollower"]

log = logging.getLogger("headwater.features")


class DefinitionFollower:
    """The definitions, namespace and take-overs of one feature consumer."""

    def __init__(
        self,
        live: LiveDefinitions,
        store: OnlineStore,
        *,
        group: str,
        decode: Callable[[bytes], object],
        tail: TailReader | None = None,
        partition_of: Callable[[str], int] | None = None,
        dropped: Callable[[Record], bool] | None = None,
    ) -> None:
        self.live = live
        self.store = store
        self.group = group
        #: Reads the bus between two positions, to take a staged run over.
        self.tail = tail
        self.partition_of = partition_of
        self.dropped = dropped or (lambda _r: False)
        #: Bus record values to signals, as the consumer decodes them.
        self.decode = decode
        #: Backfilled definitions (name, version) this consumer computes since taking
        #: them over on every partition it holds.
        self.taken: set[tuple[str, int]] = set()
        #: Where the user rows are written: the control plane's namespace, or a rebuild's
        #: once this consumer took it over; ``previous`` is written too until the switch.
        current = live.current
        self.namespace = current.namespace if current is not None else USER_NAMESPACE
        self.previous: str | None = None
        # The version in force at start is recorded with the first batch's positions.
        self._unrecorded = True
        #: The definitions' generation the engine was last built at: another caller of
        #: ``live.refresh`` (the consumer, when partitions are assigned) may have seen a
        #: change this follower has not built an engine for yet.
        self._generation = live.generation
        #: Engines of partitions on which a backfill or a rebuild is handed over while
        #: others of this consumer's are not yet (only between two members' take-overs).
        self.overrides: dict[int, FeatureEngine] = {}
        #: Partitions held whose rows live in a rebuild's namespace already (another member
        #: took them over) while this member still writes the old one: their users are
        #: read from and written to that namespace, and mirrored to the old one.
        self.rebuilt: dict[int, str] = {}
        self._engines: dict[frozenset[tuple[str, int]], tuple[FeatureEngine, FeatureEngine]] = {}

    def follow(
        self,
        engine: FeatureEngine,
        stored: Mapping[int, Position],
        *,
        held: set[int],
        fence_of: Callable[[set[int]], dict[int, int]],
    ) -> FeatureEngine:
        """The engine for the next batch, given the consumer's stored positions and the
        partitions it ``held`` (all stored ones when empty)."""
        live = self.live
        live.refresh()  # a change is seen by its generation, below
        self._follow_namespace()
        changed = False
        staged: list[BackfillRun] = []
        if live.staged and live.ledger is not None:
            # Read again before every batch: other members take partitions over too, and
            # a run they completed is no longer staged (its staging is cleared).
            fresh = {r.id: r for r in live.ledger.runs(("staged",))}
            if any(r.id not in fresh for r in live.staged):
                live.refresh(force=True)
            staged = [fresh[r.id] for r in live.staged if r.id in fresh]
        if self.tail is not None and self.partition_of is not None:
            for run in staged:
                if self._take_over(engine, run, stored, held=held, fence_of=fence_of):
                    changed = True
            if changed:
                staged = live.ledger.runs(("staged",)) if live.ledger is not None else []
        # Read again: a refresh above may have found the run completed and switched.
        self._follow_namespace()
        changed = changed or live.generation != self._generation
        if changed:
            engine = live.engine(stream=True, like=engine, taken=self.taken)
            self._generation = live.generation
        self._partition_engines(engine, staged, held or set(stored))
        if not changed and not self._unrecorded:
            return engine
        self._unrecorded = False
        current = live.current
        if current is not None:
            parts = held or set(stored)
            starts = {p: stored[p].next_offset if p in stored else 0 for p in parts}
            live.versions.record_switch(current.version, self.group, starts)
            log.info(
                "feature definitions switched",
                extra={
                    "group": self.group,
                    "version": current.version,
                    "revision": current.revision,
                    "positions": starts,
                },
            )
        return engine

    def _follow_namespace(self) -> None:
        current = self.live.current
        if current is not None and self.previous is None:
            self.namespace = current.namespace  # another member may have switched it
        if current is not None and current.namespace == self.namespace:
            self.previous = None  # every partition is rebuilt: the switch is done

    def engine_for(self, partition: int, engine: FeatureEngine) -> FeatureEngine:
        """The engine for a partition's records: ``engine``, or one that also computes
        the features a backfill or rebuild already handed over on that partition (another
        member took it over before the partition came to this one)."""
        return self.overrides.get(partition, engine)

    def _partition_engines(
        self, engine: FeatureEngine, staged: list[BackfillRun], partitions: set[int]
    ) -> None:
        self.overrides = {}
        self.rebuilt = {
            p: run.namespace
            for run in staged
            if run.kind == "rebuild" and run.namespace != self.namespace
            for p in partitions
            if p in run.handed_over
        }
        if not staged:
            return
        # A rebuilt partition too: its rows in the rebuild's namespace hold the run's
        # features, and its records must go on computing them (a feature the rebuild
        # adds would otherwise miss every record until this member takes the run over).
        for p in partitions:
            extra = {
                (n, v) for run in staged if p in run.handed_over for n, v in run.features.items()
            } - self.taken
            if extra:
                key = frozenset(extra)
                cached = self._engines.get(key)
                if cached is None or cached[0] is not engine:
                    built = self.live.engine(stream=True, like=engine, taken=self.taken | extra)
                    cached = self._engines[key] = (engine, built)
                self.overrides[p] = cached[1]

    def _take_over(
        self,
        engine: FeatureEngine,
        run: BackfillRun,
        stored: Mapping[int, Position],
        *,
        held: set[int],
        fence_of: Callable[[set[int]], dict[int, int]],
    ) -> bool:
        """Take a staged run over on the partitions held that it lacks; True when the
        stream computes its features from the next batch on."""
        live = self.live
        current = live.current
        if current is None or any(current.defined_in.get(n) != v for n, v in run.features.items()):
            return False  # redefined since: a new run computes the new definition
        need = (held or set(run.positions)) - set(run.handed_over)
        taken = set(run.features.items())
        if not need:
            # Every partition held was taken over, by this member or by others before they
            # came to it: its rows are in the rebuilt namespace from now on.
            moved = run.kind == "rebuild" and self.namespace != run.namespace
            if moved:
                self.previous, self.namespace = self.namespace, run.namespace
            if taken <= self.taken and not moved:
                return False
            self.taken |= taken
            return True
        assert self.tail is not None
        assert self.partition_of is not None
        specs = tuple(s for s in current.specs if s.name in run.features)
        rebuild = run.kind == "rebuild"
        ledger = live.ledger
        assert ledger is not None
        handed = take_over(
            run,
            engine.replaced(specs=specs, backfilling=()),
            store=self.store,
            namespace=run.namespace if rebuild else self.namespace,
            group=self.group,
            tail=self.tail,
            partitions=need,
            positions={p: stored[p].next_offset if p in stored else 0 for p in need},
            partition_of=self.partition_of,
            fence=fence_of(need),
            decode=self.decode,
            dropped=self.dropped,
            completed=lambda: set(run.positions) <= set(ledger.handed_over(run.id)),
        )
        if handed is None:
            return False  # behind the archive on a partition: a later batch takes it over
        if isinstance(handed, Superseded):
            # Other members completed the run (the last of them made its features ready,
            # or switched the namespace): follow the control plane from the next batch.
            log.info("backfill completed by other members", extra={"run": run.id})
            live.refresh(force=True)
            now = live.current
            if rebuild and now is not None and now.namespace == run.namespace:
                self.namespace, self.previous = run.namespace, None
            return True
        ledger.record_handover(run.id, self.group, handed, 0)
        self.taken |= taken
        log.info(
            "backfill taken over", extra={"group": self.group, "run": run.id, "partitions": handed}
        )
        # Other members record theirs too: what is complete is read back, not assumed.
        complete = set(run.positions) <= set(ledger.handed_over(run.id))
        if rebuild:
            # From the next batch on the rows go to the rebuilt namespace (and to the old
            # one too, read until every partition is rebuilt and the switch is made).
            self.previous, self.namespace = self.namespace, run.namespace
            if complete:
                live.versions.switch_namespace(run.namespace, run.features)
                self.previous = None
        elif complete:
            for name, version in run.features.items():
                live.versions.set_state(name, version, "ready", {"run": run.id})
        if complete:
            self.store.clear(run.staging)
            ledger.update(run.id, state="done")
        live.refresh(force=True)
        return True

    def other_namespaces(self) -> set[str]:
        """Namespaces besides the rows' that may hold user values: staged runs, the
        namespace a rebuild replaced until it is cleared."""
        live = self.live
        found = {self.previous} if self.previous else set()
        for run in live.staged:
            found |= run.namespaces
        if live.current is not None and live.current.previous_namespace:
            found.add(live.current.previous_namespace)
        found.discard(self.namespace)
        return found

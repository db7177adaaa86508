"""Backfill runs in the control plane: what each computes, up to which bus position, and
which partitions the stream has taken over.

A run computes some feature definitions for every user from one snapshot of the archive
into a staging namespace of the online store, and records the archive's bus position
per partition (``positions``): the staged values hold exactly the archived records below
it. Once ``staged``, the feature consumer owning a partition takes it over (see
``handover``) and records it here; when every partition is taken over, the run is
``done`` and its definitions ``ready``. A rebuild is a run of every feature whose
staging namespace becomes the live one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from headwater._time import now_text
from headwater.control.base import ControlDatabase
from headwater.features.versions import SCHEMA as VERSION_SCHEMA

__all__ = ["BackfillLedger", "BackfillRun"]

RunState = Literal["computing", "staged", "done", "failed"]
RunKind = Literal["backfill", "rebuild"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hw_feature_backfills (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        version BIGINT NOT NULL,
        features TEXT NOT NULL,
        namespace TEXT NOT NULL,
        positions TEXT NOT NULL,
        state TEXT NOT NULL,
        progress TEXT NOT NULL,
        started_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS hw_feature_handovers (
        backfill TEXT NOT NULL,
        part BIGINT NOT NULL,
        grp TEXT NOT NULL,
        from_offset BIGINT NOT NULL,
        to_offset BIGINT NOT NULL,
        users BIGINT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (backfill, part)
    )""",
)


class BackfillRun(msgspec.Struct, frozen=True):
    """One run: its features (name -> definition version), namespace, the archive's bus
    position per partition, state and progress.

    The computed values wait in :attr:`staging`, which no hand-over changes (a repeated
    or a second member's hand-over reads them again). A backfill's namespace is its
    staging; a rebuild's is the new namespace of the rows, written by the hand-over."""

    id: str
    kind: RunKind
    version: int
    features: dict[str, int]
    namespace: str
    positions: dict[int, int]
    state: RunState
    progress: dict[str, object]
    handed_over: dict[int, int] = {}  # partition -> the stream's position at the hand-over

    @property
    def staging(self) -> str:
        """Where the values computed from the archive wait for the hand-over."""
        return f"staging-{self.id}"

    @property
    def namespaces(self) -> set[str]:
        """Every namespace the run writes (an erasure reaches them all)."""
        return {self.staging, self.namespace}


_FEATURES = msgspec.json.Decoder(dict[str, int])
_POSITIONS = msgspec.json.Decoder(dict[int, int])


class BackfillLedger:
    """Backfill runs and their hand-overs, beside the feature definitions."""

    def __init__(self, db: ControlDatabase) -> None:
        self._db = db
        db.ensure_schema((*VERSION_SCHEMA, *SCHEMA))

    def start(self, kind: RunKind, version: int, features: Mapping[str, int]) -> BackfillRun:
        """A new run, computing; its staging namespace is named after it."""
        run_id = f"{kind}-v{version}-{uuid.uuid4().hex[:8]}"
        now = now_text()
        # A backfill stages beside the rows; a rebuild's namespace becomes the rows'.
        namespace = f"staging-{run_id}" if kind == "backfill" else f"user-{run_id}"
        self._db.execute(
            "INSERT INTO hw_feature_backfills (id, kind, version, features, namespace, "
            "positions, state, progress, started_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, '{}', 'computing', '{}', ?, ?)",
            (run_id, kind, version, json.dumps(dict(features)), namespace, now, now),
        )
        return BackfillRun(run_id, kind, version, dict(features), namespace, {}, "computing", {})

    def update(
        self,
        run_id: str,
        *,
        state: RunState | None = None,
        progress: Mapping[str, object] | None = None,
        positions: Mapping[int, int] | None = None,
    ) -> None:
        """Record progress, the archive's positions or a new state; a new state moves the
        definitions' revision, so that running consumers look at the run."""
        with self._db.transaction() as tx:
            if progress is not None:
                tx.execute(
                    "UPDATE hw_feature_backfills SET progress = ?, updated_at = ? WHERE id = ?",
                    (json.dumps(dict(progress)), now_text(), run_id),
                )
            if positions is not None:
                tx.execute(
                    "UPDATE hw_feature_backfills SET positions = ? WHERE id = ?",
                    (json.dumps({str(p): o for p, o in positions.items()}), run_id),
                )
            if state is not None:
                tx.execute(
                    "UPDATE hw_feature_backfills SET state = ?, updated_at = ? WHERE id = ?",
                    (state, now_text(), run_id),
                )
                tx.execute("UPDATE hw_feature_head SET revision = revision + 1 WHERE id = 1")

    def runs(self, states: Sequence[RunState] = ("computing", "staged")) -> list[BackfillRun]:
        """The runs in ``states`` (oldest first) with their hand-overs so far."""
        marks = ",".join("?" for _ in states)
        rows = self._db.execute(
            "SELECT id, kind, version, features, namespace, positions, state, progress "
            f"FROM hw_feature_backfills WHERE state IN ({marks}) ORDER BY started_at, id",
            tuple(states),
        )
        runs = []
        for run_id, kind, version, features, namespace, positions, state, progress in rows:
            runs.append(
                BackfillRun(
                    str(run_id),
                    kind,
                    int(version),
                    _FEATURES.decode(features),
                    str(namespace),
                    _POSITIONS.decode(positions),
                    state,
                    json.loads(progress),
                    self.handed_over(str(run_id)),
                )
            )
        return runs

    def handed_over(self, run_id: str) -> dict[int, int]:
        """The partitions of a run taken over so far, by any member: partition -> the
        stream's position at the take-over."""
        rows = self._db.execute(
            "SELECT part, to_offset FROM hw_feature_handovers WHERE backfill = ?", (run_id,)
        )
        return {int(p): int(o) for p, o in rows}

    def record_handover(
        self, run_id: str, group: str, handed: Mapping[int, tuple[int, int]], users: int
    ) -> None:
        """Partitions taken over by the stream: ``partition -> (archive position, the
        stream's position)`` (the bus tail between them was replayed into the run)."""
        now = now_text()
        with self._db.transaction() as tx:
            for part, (start, end) in sorted(handed.items()):
                tx.execute(
                    "INSERT INTO hw_feature_handovers "
                    "(backfill, part, grp, from_offset, to_offset, users, at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (backfill, part) DO NOTHING",
                    (run_id, part, group, start, end, users, now),
                )

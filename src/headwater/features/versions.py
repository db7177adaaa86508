"""Every version of the feature definitions, kept in the control plane like contracts.

A version is the whole declared set. Each feature in it names the version that defined
its computation (``defined_in``): a compatible change keeps it, any other change or a
new feature takes the new version's number, and its values are recomputed (backfilled)
before they are answered: until then its definition is ``backfilling``. The head row
(version, revision) is what running consumers and readers poll, once a second: the
revision moves with every registration and every backfill that completes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from headwater._time import now_text
from headwater.control.base import ControlDatabase, ControlTransaction
from headwater.errors import ConfigurationError
from headwater.features.plan import FeaturePlan, plan_features
from headwater.features.spec import FeatureSpec

__all__ = ["USER_NAMESPACE", "DefinedFeature", "FeatureVersion", "FeatureVersions", "Switch"]

#: The online store's namespace of user feature rows, until a rebuild replaces it.
USER_NAMESPACE = "user"

State = Literal["ready", "backfilling"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hw_feature_versions (
        version BIGINT PRIMARY KEY,
        definitions TEXT NOT NULL,
        registered_at TEXT NOT NULL,
        source TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS hw_feature_definitions (
        name TEXT NOT NULL,
        defined_in BIGINT NOT NULL,
        state TEXT NOT NULL,
        progress TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (name, defined_in)
    )""",
    """CREATE TABLE IF NOT EXISTS hw_feature_switches (
        version BIGINT NOT NULL,
        grp TEXT NOT NULL,
        part BIGINT NOT NULL,
        next_offset BIGINT NOT NULL,
        switched_at TEXT NOT NULL,
        PRIMARY KEY (version, grp, part)
    )""",
    # One row: the current version, and a revision every change moves (what is polled);
    # its update also serialises concurrent registrations on every backend.
    (
        "CREATE TABLE IF NOT EXISTS hw_feature_head "
        "(id INTEGER PRIMARY KEY, version BIGINT NOT NULL, revision BIGINT NOT NULL)"
    ),
    (
        "INSERT INTO hw_feature_head (id, version, revision) VALUES (1, 0, 0) "
        "ON CONFLICT (id) DO NOTHING"
    ),
)


class DefinedFeature(msgspec.Struct, frozen=True):
    """One feature of a version: its definition and the version that defined it."""

    spec: FeatureSpec
    defined_in: int


class Switch(msgspec.Struct, frozen=True):
    """Where a consumer group began applying a version: its next offset per partition."""

    version: int
    group: str
    positions: dict[int, int]
    switched_at: str


class FeatureVersion(msgspec.Struct, frozen=True):
    """One registered version, with each definition's state as of ``revision``, and the
    online store's namespace the user rows live in (another after a rebuild)."""

    version: int
    revision: int
    features: tuple[DefinedFeature, ...]
    states: dict[str, State]
    registered_at: str
    namespace: str = USER_NAMESPACE
    #: The namespace a rebuild replaced, until it is cleared ("" when none).
    previous_namespace: str = ""

    @property
    def specs(self) -> tuple[FeatureSpec, ...]:
        """Every feature of the version, in declaration order."""
        return tuple(f.spec for f in self.features)

    @property
    def defined_in(self) -> dict[str, int]:
        """Each feature's definition version."""
        return {f.spec.name: f.defined_in for f in self.features}

    @property
    def backfilling(self) -> tuple[str, ...]:
        """The features whose values are still being recomputed."""
        return tuple(n for n, s in self.states.items() if s == "backfilling")

    @property
    def ready_specs(self) -> tuple[FeatureSpec, ...]:
        """The features the stream computes now: every one not backfilling."""
        waiting = set(self.backfilling)
        return tuple(s for s in self.specs if s.name not in waiting)


_FEATURES = msgspec.json.Decoder(tuple[DefinedFeature, ...])


def _key(name: str, defined_in: int) -> str:
    return f"{name}@{defined_in}"


class FeatureVersions:
    """Registers feature definition versions, all or nothing, and serves the current one."""

    def __init__(self, db: ControlDatabase) -> None:
        self._db = db
        db.ensure_schema(SCHEMA)
        db.ensure_columns(
            "hw_feature_head",
            {
                "namespace": f"TEXT NOT NULL DEFAULT '{USER_NAMESPACE}'",
                "previous_namespace": "TEXT NOT NULL DEFAULT ''",
            },
        )

    def head(self) -> tuple[int, int]:
        """``(version, revision)``: one indexed row, cheap to poll."""
        rows = self._db.execute("SELECT version, revision FROM hw_feature_head WHERE id = 1")
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def current(self) -> FeatureVersion | None:
        """The current version (None before any was registered)."""
        with self._db.transaction() as tx:
            return self._current(tx)

    @staticmethod
    def _current(tx: ControlTransaction) -> FeatureVersion | None:
        head = tx.execute(
            "SELECT version, revision, namespace, previous_namespace FROM hw_feature_head "
            "WHERE id = 1"
        )
        if not head or not int(head[0][0]):
            return None
        version, revision = int(head[0][0]), int(head[0][1])
        namespace, previous = str(head[0][2]), str(head[0][3])
        row = tx.execute(
            "SELECT definitions, registered_at FROM hw_feature_versions WHERE version = ?",
            (version,),
        )
        features = _FEATURES.decode(row[0][0])
        states: dict[str, State] = {}
        for f in features:
            found = tx.execute(
                "SELECT state FROM hw_feature_definitions WHERE name = ? AND defined_in = ?",
                (f.spec.name, f.defined_in),
            )
            waiting = bool(found) and found[0][0] == "backfilling"
            states[f.spec.name] = "backfilling" if waiting else "ready"
        return FeatureVersion(
            version, revision, features, states, str(row[0][1]), namespace, previous
        )

    def history(self) -> list[tuple[int, str, str, int]]:
        """Every version: ``(version, registered_at, source, number of features)``."""
        rows = self._db.execute(
            "SELECT version, registered_at, source, definitions FROM hw_feature_versions "
            "ORDER BY version"
        )
        return [(int(v), str(at), str(src), len(json.loads(d))) for v, at, src, d in rows]

    def ensure_initial(self, specs: Sequence[FeatureSpec], *, source: str = "start") -> bool:
        """Register ``specs`` as version 1 on a control plane that has no version yet:
        the features every row was computed with so far. True if it did."""
        with self._db.transaction() as tx:
            tx.execute("UPDATE hw_feature_head SET revision = revision + 1 WHERE id = 1")
            if self._current(tx) is not None:
                return False
            features = tuple(DefinedFeature(s, 1) for s in _checked(specs))
            self._insert(tx, 1, features, {}, source)
        return True

    def plan(self, proposed: Sequence[FeatureSpec]) -> FeaturePlan:
        """What registering ``proposed`` would change, without changing anything."""
        current = self.current()
        return plan_features(current.specs if current else (), _checked(proposed))

    def apply(
        self, proposed: Sequence[FeatureSpec], *, backfill: bool = True, source: str = "apply"
    ) -> tuple[FeaturePlan, FeatureVersion | None]:
        """Register ``proposed`` as the next version, all or nothing.

        Each new or changed feature takes the new version as its definition version and
        is ``backfilling`` until its values are recomputed from the archive; with
        ``backfill=False`` it is ready at once and its values start empty at the switch.
        Returns the plan and the new current version (None when nothing changed).
        """
        proposed = _checked(proposed)
        with self._db.transaction() as tx:
            tx.execute("UPDATE hw_feature_head SET revision = revision + 1 WHERE id = 1")
            current = self._current(tx)
            plan = plan_features(current.specs if current else (), proposed)
            if plan.empty and current is not None:
                return plan, None
            version = (current.version if current else 0) + 1
            kept = current.defined_in if current else {}
            fresh = set(plan.backfills) if current else set()
            keep = {n: v for n, v in kept.items() if n not in fresh}
            features = tuple(DefinedFeature(s, keep.get(s.name, version)) for s in proposed)
            states: dict[str, State] = dict.fromkeys(fresh, "backfilling" if backfill else "ready")
            self._insert(tx, version, features, states, source)
            return plan, self._current(tx)

    @staticmethod
    def _insert(
        tx: ControlTransaction,
        version: int,
        features: tuple[DefinedFeature, ...],
        states: Mapping[str, State],
        source: str,
    ) -> None:
        now = now_text()
        tx.execute(
            "INSERT INTO hw_feature_versions (version, definitions, registered_at, source) "
            "VALUES (?, ?, ?, ?)",
            (version, msgspec.json.encode(features).decode(), now, source),
        )
        for f in features:
            if f.defined_in != version:
                continue  # carried over: its state row exists
            tx.execute(
                "INSERT INTO hw_feature_definitions "
                "(name, defined_in, state, progress, updated_at) VALUES (?, ?, ?, ?, ?)",
                (f.spec.name, version, states.get(f.spec.name, "ready"), "{}", now),
            )
        tx.execute("UPDATE hw_feature_head SET version = ? WHERE id = 1", (version,))

    def set_state(
        self, name: str, defined_in: int, state: State, progress: Mapping[str, object]
    ) -> None:
        """Record a definition's backfill state and progress (moves the revision when the
        state changes, so that consumers and readers pick it up)."""
        with self._db.transaction() as tx:
            before = tx.execute(
                "SELECT state FROM hw_feature_definitions WHERE name = ? AND defined_in = ?",
                (name, defined_in),
            )
            if not before:
                raise ConfigurationError(f"no feature definition {_key(name, defined_in)}")
            tx.execute(
                "UPDATE hw_feature_definitions SET state = ?, progress = ?, updated_at = ? "
                "WHERE name = ? AND defined_in = ?",
                (state, json.dumps(dict(progress)), now_text(), name, defined_in),
            )
            if before[0][0] != state:
                tx.execute("UPDATE hw_feature_head SET revision = revision + 1 WHERE id = 1")

    def switch_namespace(self, namespace: str, ready: Mapping[str, int]) -> str:
        """Make ``namespace`` the user rows' namespace (a rebuild's), and the definitions
        ``ready`` (name -> version) computed in it ready, in one transaction: readers and
        consumers move over together at their next poll. Returns the namespace replaced."""
        now = now_text()
        with self._db.transaction() as tx:
            old = tx.execute(
                "SELECT namespace, previous_namespace FROM hw_feature_head WHERE id = 1"
            )
            replaced = str(old[0][0])
            if replaced == namespace:
                return str(old[0][1])  # switched already (by another member)
            for name, version in ready.items():
                tx.execute(
                    "UPDATE hw_feature_definitions SET state = 'ready', updated_at = ? "
                    "WHERE name = ? AND defined_in = ?",
                    (now, name, version),
                )
            tx.execute(
                "UPDATE hw_feature_head SET namespace = ?, previous_namespace = ?, "
                "revision = revision + 1 WHERE id = 1",
                (namespace, replaced),
            )
        return replaced

    def forget_previous(self) -> None:
        """The replaced namespace was cleared."""
        self._db.execute(
            "UPDATE hw_feature_head SET previous_namespace = '', revision = revision + 1 "
            "WHERE id = 1"
        )

    def progress(self) -> dict[str, dict[str, object]]:
        """Each definition of the current version with its state and backfill progress,
        keyed ``name@defined_in`` (what ``headwater status`` shows)."""
        current = self.current()
        if current is None:
            return {}
        out: dict[str, dict[str, object]] = {}
        for f in current.features:
            rows = self._db.execute(
                "SELECT state, progress, updated_at FROM hw_feature_definitions "
                "WHERE name = ? AND defined_in = ?",
                (f.spec.name, f.defined_in),
            )
            state, progress, at = rows[0] if rows else ("ready", "{}", "")
            out[_key(f.spec.name, f.defined_in)] = {
                "state": state,
                "updated_at": at,
                **json.loads(progress),
            }
        return out

    def record_switch(self, version: int, group: str, positions: Mapping[int, int]) -> None:
        """Record where ``group`` began applying ``version`` (first record of the next
        batch, per partition); the first record per partition stays."""
        now = now_text()
        with self._db.transaction() as tx:
            for part, offset in sorted(positions.items()):
                tx.execute(
                    "INSERT INTO hw_feature_switches "
                    "(version, grp, part, next_offset, switched_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (version, grp, part) DO NOTHING",
                    (version, group, part, offset, now),
                )

    def switches(self, version: int) -> list[Switch]:
        """Where each group switched to ``version``."""
        rows = self._db.execute(
            "SELECT grp, part, next_offset, switched_at FROM hw_feature_switches "
            "WHERE version = ? ORDER BY grp, part",
            (version,),
        )
        found: dict[str, Switch] = {}
        for grp, part, offset, at in rows:
            switch = found.setdefault(str(grp), Switch(version, str(grp), {}, str(at)))
            switch.positions[int(part)] = int(offset)
        return list(found.values())


def _checked(specs: Sequence[FeatureSpec]) -> tuple[FeatureSpec, ...]:
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigurationError(f"feature names repeat: {', '.join(repeated)}")
    if not specs:
        raise ConfigurationError("a feature definition set declares at least one feature")
    return tuple(specs)

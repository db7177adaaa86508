"""The contract registry: every version of every event type, kept in the control plane."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from headwater._time import now_text
from headwater.contract.compat import Violation, check_evolution
from headwater.contract.definition import EventTypeDefinition, RegisteredEventType
from headwater.control.base import ControlDatabase, Row
from headwater.errors import IncompatibleChangeError, PermissionDeniedError, UnknownEventTypeError

__all__ = ["ChangePlan", "ContractRegistry"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hw_contract_versions (
        name TEXT NOT NULL,
        version BIGINT NOT NULL,
        definition TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        registered_at TEXT NOT NULL,
        PRIMARY KEY (name, version)
    )""",
    # One row whose update serialises concurrent registrations on every backend.
    (
        "CREATE TABLE IF NOT EXISTS hw_contract_lock "
        "(id INTEGER PRIMARY KEY, revision BIGINT NOT NULL)"
    ),
    "INSERT INTO hw_contract_lock (id, revision) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
)

_DEF = msgspec.json.Decoder(EventTypeDefinition)
_SELECT_ALL = (
    "SELECT name, version, definition, registered_at FROM hw_contract_versions "
    "ORDER BY name, version"
)


def _check_ownership(
    history: Mapping[str, list[RegisteredEventType]],
    proposed: Mapping[str, EventTypeDefinition],
    team: str,
) -> None:
    refused = []
    for name, definition in sorted(proposed.items()):
        versions = history.get(name)
        owner = versions[-1].definition.owner if versions else None
        if owner is not None and owner != team:
            refused.append(f"{name!r} is owned by team {owner!r}")
        elif definition.owner != team:
            what = "a new type" if owner is None else "the type"
            refused.append(
                f"{what} {name!r} would be owned by {definition.owner!r}: a change of owner "
                "needs the admin role"
            )
    if refused:
        raise PermissionDeniedError(
            f"team {team!r} may register only the event types it owns: " + "; ".join(refused)
        )


def _group(rows: list[Row]) -> dict[str, list[RegisteredEventType]]:
    found: dict[str, list[RegisteredEventType]] = {}
    for name, version, text, at in rows:
        found.setdefault(name, []).append(
            RegisteredEventType(_DEF.decode(text), int(version), str(at))
        )
    return found


class ChangePlan(msgspec.Struct, frozen=True):
    """What registering a proposed set would do, and what it would refuse."""

    added: tuple[str, ...]
    changed: tuple[tuple[str, int], ...]  # (type, new version)
    unchanged: tuple[str, ...]
    violations: tuple[Violation, ...]

    @property
    def compatible(self) -> bool:
        """True when nothing is refused."""
        return not self.violations


class ContractRegistry:
    """Registers event type definitions under the evolution rules and serves them."""

    def __init__(self, db: ControlDatabase) -> None:
        self._db = db
        db.ensure_schema(SCHEMA)

    def history(self) -> dict[str, list[RegisteredEventType]]:
        """Every registered version of every type, oldest first."""
        return _group(self._db.execute(_SELECT_ALL))

    def current(self) -> list[RegisteredEventType]:
        """The latest version of each registered type."""
        return [versions[-1] for versions in self.history().values()]

    def owner_of(self, name: str) -> str | None:
        """The team owning an event type (None for an unknown type)."""
        versions = self.history().get(name)
        return versions[-1].definition.owner if versions else None

    def transfer(self, name: str, owner: str) -> ChangePlan:
        """Give an event type to another team: a new version whose only change is the
        owner (an administrator's act)."""
        versions = self.history().get(name)
        if not versions:
            raise UnknownEventTypeError(f"no event type {name!r} is registered")
        moved = msgspec.structs.replace(versions[-1].definition, owner=owner)
        return self.apply({name: moved}, partial=True)

    def revision(self) -> int:
        """A number that grows whenever a version is registered (for cache refresh)."""
        rows = self._db.execute("SELECT COUNT(*) FROM hw_contract_versions")
        return int(rows[0][0])

    def plan(
        self, proposed: Mapping[str, EventTypeDefinition], *, partial: bool = False
    ) -> ChangePlan:
        """Compare a proposed set with the registered one, without changing anything.

        ``partial`` treats types missing from ``proposed`` as untouched rather than removed
        (for registering one team's file, or one type through the API).
        """
        return self._plan(self.history(), proposed, partial=partial)

    @staticmethod
    def _plan(
        history: Mapping[str, list[RegisteredEventType]],
        proposed: Mapping[str, EventTypeDefinition],
        *,
        partial: bool,
    ) -> ChangePlan:
        pairs = {n: [(r.version, r.definition) for r in v] for n, v in history.items()}
        violations = check_evolution(pairs, proposed, allow_removal=partial)
        added, changed, unchanged = [], [], []
        for name, definition in sorted(proposed.items()):
            versions = history.get(name)
            if not versions:
                added.append(name)
            elif versions[-1].definition.fingerprint() == definition.fingerprint():
                unchanged.append(name)
            else:
                changed.append((name, versions[-1].version + 1))
        return ChangePlan(tuple(added), tuple(changed), tuple(unchanged), tuple(violations))

    def apply(
        self,
        proposed: Mapping[str, EventTypeDefinition],
        *,
        partial: bool = False,
        as_team: str | None = None,
    ) -> ChangePlan:
        """Register the proposed set, all or nothing; refuse it with every violation listed.

        ``as_team`` registers on behalf of one team (a ``contracts`` key): it may evolve
        only the types it owns and add types it will own; changing a type's owner needs
        an administrator (``as_team=None``). Checked in the same transaction as the write.
        """
        with self._db.transaction() as tx:
            tx.execute("UPDATE hw_contract_lock SET revision = revision + 1 WHERE id = 1")
            history = _group(tx.execute(_SELECT_ALL))
            if as_team is not None:
                _check_ownership(history, proposed, as_team)
            plan = self._plan(history, proposed, partial=partial)
            if plan.violations:
                raise IncompatibleChangeError(plan.violations)
            now = now_text()
            news = [(n, 1) for n in plan.added] + list(plan.changed)
            for name, version in news:
                definition = proposed[name]
                tx.execute(
                    "INSERT INTO hw_contract_versions "
                    "(name, version, definition, fingerprint, registered_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        name,
                        version,
                        msgspec.json.encode(definition).decode(),
                        definition.fingerprint().decode(),
                        now,
                    ),
                )
        return plan

"""The scale-out control plane: PostgreSQL through psycopg 3."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from headwater.control.base import Row
from headwater.errors import (
    BackendUnavailableError,
    ControlPlaneError,
    MissingDependencyError,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresControlDatabase"]

# Advisory lock id that serialises schema creation across processes.
_SCHEMA_LOCK = 0x68656164


#: Seconds a scrub's rewrite waits for its table's lock before it counts as held.
REWRITE_LOCK_TIMEOUT = 5.0
#: VACUUM VERBOSE's count of dead versions it had to keep (PostgreSQL 15+, then 9.6-14).
_HELD = (
    re.compile(r"(\d+) are dead but not yet removable"),
    re.compile(r"(\d+) dead row versions cannot be removed yet"),
)


def _dead_not_removable(report: str) -> int:
    for pattern in _HELD:
        found = pattern.findall(report)
        if found:
            return sum(int(n) for n in found)
    return 0


def _pg(sql: str) -> str:
    # Repositories write ? placeholders; psycopg wants %s (and a literal % doubled).
    return sql.replace("%", "%%").replace("?", "%s")


class _Tx:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        import psycopg

        try:
            cur = self._conn.execute(_pg(sql), tuple(params))
            return list(cur.fetchall()) if cur.description is not None else []
        except psycopg.Error as exc:
            raise ControlPlaneError(f"control plane (postgresql): {exc}") from exc

    def lock_table(self, table: str) -> None:
        # Waits out INSERT, UPDATE, DELETE and another holder of the mode (SHARE alone
        # would let two holders deadlock on their deletes); plain reads go on.
        self.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")


class PostgresControlDatabase:
    """Control-plane tables in PostgreSQL, selected by a ``postgresql://`` URL."""

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise MissingDependencyError("postgresql", "psycopg", "postgres") from None
        self.url = url
        self._lock = threading.RLock()
        try:
            self._conn: psycopg.Connection[Any] = psycopg.connect(
                url, autocommit=True, connect_timeout=10
            )
        except psycopg.OperationalError as exc:
            raise BackendUnavailableError(f"cannot reach PostgreSQL at {url}: {exc}") from exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self.transaction() as tx:
            return tx.execute(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        import psycopg

        with self._lock:
            try:
                with self._conn.transaction():
                    yield _Tx(self._conn)
            except psycopg.OperationalError as exc:
                raise BackendUnavailableError(f"PostgreSQL: {exc}") from exc
            except psycopg.Error as exc:
                raise ControlPlaneError(f"control plane (postgresql): {exc}") from exc

    def ensure_schema(self, statements: Sequence[str]) -> None:
        with self.transaction() as tx:
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            for statement in statements:
                tx.execute(statement)

    def ensure_columns(self, table: str, columns: Mapping[str, str]) -> None:
        with self.transaction() as tx:
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            for name, ddl in columns.items():
                tx.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {ddl}")

    def scrub(self, tables: Sequence[str], *, rewrite: bool = False) -> dict[str, object]:
        """``VACUUM`` the tables: their dead row versions (what an UPDATE or DELETE left
        behind) are removed from the heap and its indexes.

        A transaction older than the delete holds its dead versions back; VACUUM says so
        in its report, and the count is returned (``dead_not_yet_removable``), so the
        erasure is not confirmed while a copy is still in the table's pages.

        VACUUM leaves a removed tuple's bytes in its page's free space (a B-tree index
        page kept an erased dead letter's key: ``tests/erasure/test_bytes.py``). With
        ``rewrite``, a table none of whose dead versions is held is then rewritten with
        its indexes into new files (``VACUUM FULL``), the old files unlinked; one whose
        lock is not had within ``REWRITE_LOCK_TIMEOUT`` counts as held.
        """
        import psycopg

        held: dict[str, int] = {}
        rewritten: list[str] = []
        with self._lock:
            notices: list[str] = []

            def collect(diag: psycopg.errors.Diagnostic) -> None:
                notices.append(f"{diag.message_primary or ''}\n{diag.message_detail or ''}")

            self._conn.add_notice_handler(collect)
            try:
                for table in tables:
                    notices.clear()
                    self._conn.execute(f"VACUUM (VERBOSE) {table}")
                    held[table] = sum(_dead_not_removable(n) for n in notices)
                    if rewrite and not held[table]:
                        if self._rewrite(table):
                            rewritten.append(table)
                        else:
                            held[table] = 1
            except psycopg.Error as exc:
                raise ControlPlaneError(f"control plane (postgresql): VACUUM: {exc}") from exc
            finally:
                self._conn.remove_notice_handler(collect)
        return {
            "vacuumed": list(tables),
            **({"rewritten": rewritten} if rewrite else {}),
            "dead_not_yet_removable": held,
            "server": "postgresql",
        }

    def _rewrite(self, table: str) -> bool:
        """``VACUUM FULL`` within the lock timeout; False when the lock was not had."""
        import psycopg

        timeout = int(REWRITE_LOCK_TIMEOUT * 1000)
        self._conn.execute(f"SET lock_timeout = {timeout}")
        try:
            self._conn.execute(f"VACUUM FULL {table}")
        except psycopg.errors.LockNotAvailable:
            return False
        finally:
            self._conn.execute("RESET lock_timeout")
        return True

    def close(self) -> None:
        with self._lock:
            self._conn.close()

"""The control-plane port: a small SQL database for contracts, producer keys and the erasure ledger.

Repositories (``ContractRegistry``, ``ApiKeys``, ``ErasureLedger``) write
portable SQL with ``?`` placeholders against this protocol; each backend
translates placeholders and driver errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["ControlDatabase", "ControlTransaction", "Row"]

Row = tuple[Any, ...]


class ControlDatabase(Protocol):
    """What a control-plane backend offers its repositories."""

    url: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement in its own transaction; rows it returns, if any."""
        ...

    def transaction(self) -> AbstractContextManager[ControlTransaction]:
        """A transaction: every statement in it commits together or not at all."""
        ...

    def ensure_schema(self, statements: Sequence[str]) -> None:
        """Create tables and indexes if they do not exist (idempotent DDL)."""
        ...

    def ensure_columns(self, table: str, columns: Mapping[str, str]) -> None:
        """Add the columns ``table`` lacks (name -> type and default), for tables created
        by an earlier version; existing rows take the default."""
        ...

    def scrub(self, tables: Sequence[str], *, rewrite: bool = False) -> dict[str, object]:
        """Make rows deleted from ``tables`` unrecoverable from the database's files (an
        erasure calls this after its deletes); returns what was done, for the audit.

        ``rewrite``: also where the server leaves freed bytes in place (PostgreSQL's
        heap and index pages keep a removed tuple's bytes as free space), rewrite the
        tables into new files. For small tables that held personal data in clear."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class ControlTransaction(Protocol):
    """Statements run inside one transaction."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; rows it returns, if any."""
        ...

    def lock_table(self, table: str) -> None:
        """Make other connections' writes to ``table`` wait until this transaction ends,
        so what it read of the table stays true until it commits."""
        ...

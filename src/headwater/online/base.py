"""The online store port: rows the API reads at request time, and the consumer's positions.

Rows are opaque bytes under ``(namespace, key)``: the streaming consumer keeps each
user's feature state under ``user``; the nightly batch keeps its results under its
own namespaces. A consumer writes rows and its bus positions in one atomic, durable
write, so a replay after a crash skips exactly what was already applied.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

import msgspec

__all__ = ["OnlineStore", "Position"]


class Position(msgspec.Struct, frozen=True, array_like=True):
    """Where a consumer group stands on one partition, as recorded with its rows.

    ``next_offset`` is the first offset not applied; ``as_of_ms`` the time up to which
    the partition is processed (the append time of the last applied record, or the
    time the consumer last found the partition caught up).
    """

    next_offset: int
    as_of_ms: int


class OnlineStore(Protocol):
    """Key-value rows with atomic row-and-position writes."""

    url: str
    #: True when a read is local work without a network round trip (an embedded file):
    #: a caller on an event loop may do a one-row read inline instead of in a thread.
    local: bool

    def get(self, namespace: str, keys: Sequence[str]) -> dict[str, bytes]:
        """The stored rows among ``keys`` (absent keys are left out)."""
        ...

    def put(
        self,
        namespace: str,
        rows: Mapping[str, bytes],
        *,
        group: str = "",
        positions: Mapping[int, Position] | None = None,
        fence: Mapping[int, int] | None = None,
    ) -> None:
        """Write rows and (optionally) a group's positions together, durably.

        ``fence`` maps partitions to the generation the writer claimed for them: the
        write happens only if each is still the group's current generation, checked
        atomically with it, else nothing is written and ``FencedError`` is raised.
        """
        ...

    def claim(self, group: str, partitions: Sequence[int]) -> dict[int, int]:
        """Take ``partitions`` for a new member of ``group``: each gets a generation one
        above the last, and writes fenced with an older one are refused from now on."""
        ...

    def positions(self, group: str) -> dict[int, Position]:
        """A group's recorded positions per partition."""
        ...

    def delete(self, namespace: str, keys: Sequence[str]) -> int:
        """Delete rows; the number that existed."""
        ...

    def count(self, namespace: str, keys: Sequence[str]) -> int:
        """How many of ``keys`` have a row (an independent check for erasure evidence)."""
        ...

    def keys(self, namespace: str) -> list[str]:
        """Every key of a namespace (for audits and recomputes; not a hot path)."""
        ...

    def clear(self, namespace: str) -> int:
        """Delete every row of a namespace; the number deleted."""
        ...

    def scrub(self, erased: Collection[str] = (), *, rebuild: bool = False) -> dict[str, object]:
        """After an erasure: remove what a deleted row leaves behind in the store's own
        files (old page images, logs); what was done, or what the server keeps, for the
        audit's evidence. Given ``erased`` (the keys the erasure deleted; a resent
        erasure gives them), also make sure no old copy of them is left, whatever it
        costs (the SQLite store reads its file and, if one is there, rebuilds it).
        ``rebuild``: the independent verification found the user in the store's files
        after it confirmed; the SQLite store rebuilds its file whatever its own search
        finds (the verification also searches ids the store no longer knows). The SQLite
        store also rebuilds it whenever rows were deleted since its last scrub: an old
        copy of a row may keep the user's values without the key."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

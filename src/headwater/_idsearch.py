"""Ids searched as whole tokens in bytes: store files, SQLite pages, stored records.

The erasure verification's search (``headwater.erasure.verify``) and the SQLite stores'
own check for old copies after an erasure (``headwater._sqlite``) both use it: a pure
helper, below the stores and the domains.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from headwater._livefile import live_file
from headwater._sqlite_pages import (
    DatabaseShape,
    PageLayout,
    database_shape,
    frame_page,
    frame_unit,
    page_layout,
    page_runs,
    recovered_value,
)

__all__ = ["Needles", "TokenSet", "count_ids", "sqlite_copies"]

#: Bytes that continue an identifier: a hit inside a longer run of them is another id
#: that merely contains this one ("u001" inside "u0012"), not a copy of it.
_ID_BYTES = frozenset(string.ascii_letters.encode() + string.digits.encode() + b"_.@-")
_TOKEN = re.compile(rb"[" + re.escape(bytes(sorted(_ID_BYTES))) + rb"]+")
#: Up to this many ids a file is searched once per id; beyond, once for all.
_FIND_AT_MOST = 8
#: Up to this many ids each has an automaton of its own: on 120 MB of a bus log, one
#: automaton over 2 to 6 ids took 150-310 ms and one per id 28-76 ms; over 8 or more,
#: one automaton took 61-68 ms and one per id 92 ms or more.
_ONE_EACH_AT_MOST = 6


def _whole(view: Any, at: int, end: int) -> bool:
    before = view[at - 1] if at > 0 else 0
    after = view[end] if end < len(view) else 0
    return before not in _ID_BYTES and after not in _ID_BYTES


def _find_each(view: bytes, needle: bytes, start: int, limit: int) -> int:
    found = 0
    at = view.find(needle, start, limit + len(needle))
    while at != -1 and at < limit:
        found += _whole(view, at, at + len(needle))
        at = view.find(needle, at + 1, limit + len(needle))
    return found


def _automaton(needles: Sequence[bytes]) -> Any:
    """An Aho-Corasick automaton over ``needles`` (every file of a store is searched for
    every id in one pass, at gigabytes a second), or None without ``ahocorasick-rs``."""
    try:
        from ahocorasick_rs import BytesAhoCorasick
    except ImportError:  # a base install: the token search below does the same, slower
        return None
    return BytesAhoCorasick(needles)


class Needles:
    """Ids to look for as whole tokens, prepared once for many searches (a store's files,
    a log's records): the raw user ids and the users' event ids."""

    def __init__(self, ids: Iterable[str], *, automaton: bool = True) -> None:
        self.wanted = {i.encode(): i for i in ids if i}
        self._order = list(self.wanted)
        # Automatons and the ids each finds: a few ids one each (a search for one id is a
        # vectorised substring search, about 10 GB/s; one automaton over a few ids may
        # pick a prefilter that runs at a tenth of that), more ids one for all.
        groups = (
            [[needle] for needle in self._order]
            if len(self._order) <= _ONE_EACH_AT_MOST
            else [self._order]
        )
        found = [(_automaton(group), group) for group in groups] if automaton else []
        self._acs = [(ac, group) for ac, group in found if ac is not None]
        plain = {b for b in self.wanted if all(c in _ID_BYTES for c in b)}
        # What may_be_in compares with a file's tokens: an id that is not one token may
        # be anywhere.
        self._plain_hashes = frozenset(hash(b) for b in plain)
        self._any_other = len(plain) < len(self.wanted)
        # Without the automaton, many plain ids: one pass for all, each maximal run of id
        # bytes a token; the others one search each.
        self._tokens = plain if not self._acs and len(plain) > _FIND_AT_MOST else set()
        self._each = [b for b in self.wanted if b not in self._tokens] if not self._acs else []

    def count(self, view: bytes, *, start: int = 0, limit: int | None = None) -> dict[str, int]:
        """Whole-token occurrences of each id in ``view`` that start in ``[start, limit)``
        (bytes outside it are context: what surrounds an id decides whether it is whole)."""
        end = len(view) if limit is None else limit
        wanted = self.wanted
        counts = dict.fromkeys(wanted.values(), 0)
        if self._acs:
            for ac, group in self._acs:
                for index, at, stop in ac.find_matches_as_indexes(view, overlapping=True):
                    if start <= at < end and _whole(view, at, stop):
                        counts[wanted[group[index]]] += 1
            return counts
        # Most searches find nothing: every token at once, in C, says whether any is
        # there before the exact count walks the tokens one by one.
        if self._tokens and not self._tokens.isdisjoint(_TOKEN.findall(view)):
            for match in _TOKEN.finditer(view):
                if match.start() >= end:
                    break
                token = match.group()
                if token in self._tokens and match.start() >= start:
                    counts[wanted[token]] += 1
        for needle in self._each:
            counts[wanted[needle]] += _find_each(view, needle, start, end)
        return counts

    def occurrences(self, view: bytes) -> Iterator[tuple[str, int, int]]:
        """Every occurrence of every id in ``view``, whole token or not (overlapping):
        the id, where it starts and where it ends."""
        wanted = self.wanted
        if self._acs:
            for ac, group in self._acs:
                for index, at, stop in ac.find_matches_as_indexes(view, overlapping=True):
                    yield wanted[group[index]], at, stop
            return
        for needle, value in wanted.items():  # a base install: one search per id
            at = view.find(needle)
            while at != -1:
                yield value, at, at + len(needle)
                at = view.find(needle, at + 1)

    def may_be_in(self, tokens: TokenSet) -> bool:
        """Whether a file whose tokens are ``tokens`` may hold one of the ids as a whole
        token. An id made of id bytes is there only if it is one of the file's tokens
        (a hash collision only costs an exact count); any other id may be anywhere."""
        return self._any_other or not self._plain_hashes.isdisjoint(tokens.hashes)

    def any_in(self, view: bytes) -> bool:
        """Whether ``view`` holds one of the ids as a whole token."""
        if self._acs:
            # The first whole match answers (no count per id: the bus check asks this of
            # every stored batch).
            return any(
                _whole(view, at, stop)
                for ac, _ in self._acs
                for _, at, stop in ac.find_matches_as_indexes(view, overlapping=True)
            )
        if not self._tokens:
            return any(self.count(view).values())
        return not self._tokens.isdisjoint(_TOKEN.findall(view)) or any(
            _find_each(view, needle, 0, len(view)) for needle in self._each
        )


class TokenSet:
    """The hashes of every maximal run of id bytes in a file's content: what a file that
    never changes is known by between passes (see :meth:`Needles.may_be_in`)."""

    def __init__(self, content: bytes) -> None:
        self.hashes = frozenset(hash(token) for token in _TOKEN.findall(content))
        self.nbytes = 64 + 40 * len(self.hashes)  # a set entry and an int, roughly


def count_ids(
    view: bytes, ids: Iterable[str], *, start: int = 0, limit: int | None = None
) -> dict[str, int]:
    """:meth:`Needles.count` for one search."""
    return Needles(ids).count(view, start=start, limit=limit)


#: Files are read in pieces this large; each piece repeats the last _OVERLAP bytes of
#: the one before (plus one byte of context), so an id across a boundary is found
#: exactly once. Ids are at most 128 characters.
_CHUNK = 16 * 2**20
_OVERLAP = 1024


def _count_in_file(path: Path, ids: Sequence[str] | Needles) -> dict[str, int]:
    """Occurrences in a live file, read in pieces: never memory-mapped, since a store
    that truncates its write-ahead log meanwhile must not take this process down; and
    through a descriptor never closed (``_livefile``), so SQLite keeps its locks."""
    needles = ids if isinstance(ids, Needles) else Needles(ids)
    counts: dict[str, int] = {}
    with live_file(path) as f:
        if f is None:
            return counts
        carry, start = b"", 0
        while True:
            piece = f.read(_CHUNK)
            data = carry + piece
            if not data:
                break
            last = len(piece) < _CHUNK
            limit = len(data) if last else max(0, len(data) - _OVERLAP)
            for user, n in needles.count(data, start=start, limit=limit).items():
                counts[user] = counts.get(user, 0) + n
            if last:
                break
            # One byte before the next window's first: the context of an id there.
            carry, start = data[limit - 1 :], 1
    return counts


def _count_in_database(
    path: Path, needles: Needles, shape: DatabaseShape, *, wal: bool
) -> dict[str, int]:
    """Occurrences of the ids in a SQLite database file or its write-ahead log, page by
    page: a whole token of the page's bytes counts at once; any other hit is placed in the
    page's layout (see :mod:`headwater._sqlite_pages`): it counts as a token of
    one value, or anywhere outside the page's cells."""
    counts: dict[str, int] = {}
    unit, lead = frame_unit(shape, wal=wal)
    number = 1
    for run in page_runs(path, shape, wal=wal):
        view = memoryview(run)
        layouts: dict[int, PageLayout | None] = {}
        for value, at, stop in needles.occurrences(run):
            index, offset = divmod(at, unit)
            offset -= lead
            end = offset + stop - at
            if offset < 0 or end > shape.page_size:
                continue  # across a frame header or two pages: not stored contiguously
            page = view[index * unit + lead : (index + 1) * unit]
            if not _whole(page, offset, end):
                if index not in layouts:
                    page_no = frame_page(run, index, shape) if wal else number + index
                    try:
                        layouts[index] = page_layout(page, page_no, shape.usable)
                    except (IndexError, ValueError):
                        layouts[index] = None  # torn as it was read: every hit counts
                layout = layouts[index]
                if layout is not None and not _placed(layout, page, offset, end):
                    continue
            counts[value] = counts.get(value, 0) + 1
        number += len(run) // unit
    return counts


def sqlite_copies(main: Path, ids: Iterable[str]) -> int:
    """Occurrences of ``ids`` in a SQLite database's file and write-ahead log, each hit
    placed in its page as the verification places it."""
    needles = Needles(ids)
    shape = database_shape(main)
    if shape is None:
        return 0
    wal = Path(f"{main}-wal")
    return sum(
        sum(_count_in_database(path, needles, shape, wal=is_wal).values())
        for path, is_wal in ((main, False), (wal, True))
    )


def _placed(layout: PageLayout, page: memoryview, at: int, end: int) -> bool:
    """Whether a hit that is not a whole token of the page's bytes is a copy of the id:
    a token of one of the page's values, or, in its free space, of a value of an earlier
    copy of a cell."""
    value = layout.value_of(at, end)
    if value is None:
        if layout.in_a_cell(at, end):
            return False  # across two values of a record
        # Free space: what SQLite left of earlier cells. A hit there that is not a whole
        # token counts if an earlier copy of a cell, read as SQLite wrote it, makes it a
        # token of one of its values (a MessagePack string is bounded on one side only
        # by its header: one bounded side does not make a copy).
        value = recovered_value(page, at, end)
        if value is None:
            return False
    start, stop = value
    before = page[at - 1] if at > start else 0
    after = page[end] if end < min(stop, len(page)) else 0
    return before not in _ID_BYTES and after not in _ID_BYTES

"""The values a SQLite page holds, for the verification's byte search of a store's files.

SQLite stores a row's columns one after the other with nothing between them: the row
``(ns "features", key "u0031550")`` is the bytes ``featuresu0031550``, and an idempotency
entry is its event id followed by its user id. A search that counts an id only where it
is not part of a longer run of id characters (so that ``u001`` inside ``u0012`` is not a
copy of ``u001``) would miss both. Where a hit is not bounded that way, the verifier
reads the page it is on as SQLite lays it out (file format: sqlite.org/fileformat2.html):
the b-tree page's cells, each cell's record, each record's text and blob values. A hit
counts when it is a token of one value (bounded by the value's ends or by bytes that are
not id characters); a hit that runs across two values of a record is not a copy of the
id. In a page's free space, which ``secure_delete`` zeroes when a cell is deleted, SQLite
still leaves the earlier bytes of cells it moved when it rebuilt the page: a hit there
counts when it is a whole token, or when the nearest record header before it, read as
SQLite writes one, makes it a token of one of that earlier cell's values.

A page that is not a b-tree page (an overflow page, which holds the tail of a value too
long for its cell; a free page) is read as one value after its 4-byte link.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from headwater._livefile import live_file

__all__ = [
    "DatabaseShape",
    "PageLayout",
    "database_shape",
    "frame_page",
    "frame_unit",
    "page_layout",
    "page_runs",
    "recovered_value",
]

#: b-tree page types: interior index, interior table, leaf index, leaf table.
_INTERIOR_INDEX, _INTERIOR_TABLE, _LEAF_INDEX, _LEAF_TABLE = 2, 5, 10, 13
#: Bytes of a value of each serial type below 12 (NULL, integers, float, 0, 1, reserved).
_SIZES = (0, 1, 2, 3, 4, 6, 8, 8, 0, 0, 0, 0)
_WAL_HEADER = 32
_FRAME_HEADER = 24
#: Pages read at a time.
_PAGES_PER_READ = 4096


class DatabaseShape(NamedTuple):
    """A database's page size and the bytes of each page its b-tree uses."""

    page_size: int
    usable: int


def database_shape(main: Path) -> DatabaseShape | None:
    """Page size and usable size from the database header; None for an empty file."""
    with live_file(main) as f:
        if f is None:
            return None
        header = f.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return None
    size = int.from_bytes(header[16:18], "big")
    size = 65536 if size == 1 else size
    return DatabaseShape(size, size - header[20])


def frame_unit(shape: DatabaseShape, *, wal: bool) -> tuple[int, int]:
    """Bytes from one page image to the next in the file, and where in that stretch the
    image starts (after its 24-byte frame header in a write-ahead log)."""
    return (shape.page_size + _FRAME_HEADER, _FRAME_HEADER) if wal else (shape.page_size, 0)


def page_runs(path: Path, shape: DatabaseShape, *, wal: bool) -> Iterator[bytes]:
    """The file's pages (or frames), read a few thousand at a time: whole pages only (a
    page being appended as the file is read is left out)."""
    unit, _ = frame_unit(shape, wal=wal)
    with live_file(path) as f:
        if f is None:
            return
        if wal and len(f.read(_WAL_HEADER)) < _WAL_HEADER:
            return
        while True:
            run = f.read(unit * _PAGES_PER_READ)
            whole = len(run) - len(run) % unit
            if whole:
                yield run[:whole]
            if len(run) < unit * _PAGES_PER_READ:
                return


def frame_page(run: bytes | memoryview, index: int, shape: DatabaseShape) -> int:
    """The number of the page a log's ``index``-th frame of a run holds."""
    at = index * (shape.page_size + _FRAME_HEADER)
    return int.from_bytes(run[at : at + 4], "big")


class PageLayout:
    """The text and blob values of a page image and the extents of its cells (offsets
    in the page); a page that is not a b-tree page is one value after its link."""

    def __init__(self, values: list[tuple[int, int]], cells: list[tuple[int, int]]) -> None:
        self.values = sorted(values)
        self.cells = sorted(cells)
        self._value_starts = [start for start, _ in self.values]
        self._cell_starts = [start for start, _ in self.cells]

    def value_of(self, at: int, stop: int) -> tuple[int, int] | None:
        """The value that holds bytes ``[at, stop)``, if one does (values never overlap)."""
        i = bisect_right(self._value_starts, at) - 1
        if i >= 0 and stop <= self.values[i][1]:
            return self.values[i]
        return None

    def in_a_cell(self, at: int, stop: int) -> bool:
        """Whether bytes ``[at, stop)`` touch a cell (and so are not free space)."""
        i = bisect_right(self._cell_starts, stop - 1) - 1
        return i >= 0 and at < self.cells[i][1]


def _varint(page: bytes | memoryview, at: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        byte = page[at + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + i + 1
    return (value << 8) | page[at + 8], at + 9


def _local_size(payload: int, usable: int, *, table_leaf: bool) -> int:
    """How much of a payload a cell holds on its page (the rest is on overflow pages)."""
    most = usable - 35 if table_leaf else (usable - 12) * 64 // 255 - 23
    if payload <= most:
        return payload
    least = (usable - 12) * 32 // 255 - 23
    kept = least + (payload - least) % (usable - 4)
    return kept if kept <= most else least


def _record(
    page: bytes | memoryview, at: int, limit: int | None = None
) -> tuple[list[tuple[int, int]], int, bool]:
    """The text and blob values of the record at ``at`` (read up to ``limit``, the cell's
    local payload, if given), where its body ends, and whether its header reads as
    SQLite writes one (serial types that end at its stated size, none reserved)."""
    size, cursor = _varint(page, at)
    header_end = at + size
    body = header_end
    values: list[tuple[int, int]] = []
    sane = True
    while cursor < header_end and (limit is None or body < limit):
        serial, cursor = _varint(page, cursor)
        sane = sane and serial not in (10, 11)
        length = (serial - 12) // 2 if serial >= 12 else _SIZES[serial]
        if serial >= 12 and length:
            values.append((body, body + length))
        body += length
    return values, body, sane and cursor == header_end


#: How far before a hit in a page's free space an earlier copy's record header is looked for.
_RECOVER_BYTES = 512


def recovered_value(page: bytes | memoryview, at: int, stop: int) -> tuple[int, int] | None:
    """In a page's free space, the value of an earlier copy of a cell that holds bytes
    ``[at, stop)``: the nearest record before them whose header (a size, then serial
    types) lays out a text or blob value over those bytes, and which is whole as a cell
    (the payload size just before it, or before a rowid, is the record's length).

    SQLite leaves whole cells there when it rebuilds a page; so an id glued to values
    on both sides is read with its own bounds.
    """
    for start in range(at - 1, max(-1, at - _RECOVER_BYTES), -1):
        try:
            found = _value_at(page, start, at, stop)
        except IndexError:
            continue
        if found is not None:
            return found
    return None


def _value_at(page: bytes | memoryview, start: int, at: int, stop: int) -> tuple[int, int] | None:
    size = page[start]
    if not 2 <= size <= 64 or start + size > at:
        return None
    values, body, sane = _record(page, start)
    if not sane or body > len(page) or not _whole_cell(page, start, body - start):
        return None
    return next(((s, e) for s, e in values if s <= at and stop <= e), None)


def _varints_ending_at(page: bytes | memoryview, end: int) -> Iterator[tuple[int, int]]:
    """The varints (value, first byte) that end just before ``end``."""
    for width in range(1, 4):
        if end - width >= 0:
            value, after = _varint(page, end - width)
            if after == end:
                yield value, end - width


def _whole_cell(page: bytes | memoryview, record: int, length: int) -> bool:
    """Whether the record at ``record`` follows its cell's payload size: just before it
    (an index cell) or before a rowid (a table cell)."""
    for value, first in _varints_ending_at(page, record):
        if value == length:
            return True
        if any(size == length for size, _ in _varints_ending_at(page, first)):
            return True
    return False


def page_layout(page: bytes | memoryview, number: int, usable: int) -> PageLayout:
    """The values and cells of one page image; raises ``IndexError`` or ``ValueError``
    on a page that is not laid out as SQLite lays out pages (a torn read)."""
    header = 100 if number == 1 else 0
    kind = page[header]
    if kind not in (_INTERIOR_INDEX, _INTERIOR_TABLE, _LEAF_INDEX, _LEAF_TABLE):
        return PageLayout([(4, usable)], [])
    count = int.from_bytes(page[header + 3 : header + 5], "big")
    pointers = header + (12 if kind in (_INTERIOR_INDEX, _INTERIOR_TABLE) else 8)
    values: list[tuple[int, int]] = []
    cells: list[tuple[int, int]] = []
    for i in range(count):
        cell = int.from_bytes(page[pointers + 2 * i : pointers + 2 * i + 2], "big")
        if not 0 < cell < usable:
            raise ValueError(f"cell pointer {cell} outside the page")
        if kind == _INTERIOR_TABLE:
            _, end = _varint(page, cell + 4)
            cells.append((cell, end))
            continue
        at = cell + 4 if kind == _INTERIOR_INDEX else cell
        payload, at = _varint(page, at)
        if kind == _LEAF_TABLE:
            _, at = _varint(page, at)  # the rowid
        local = _local_size(payload, usable, table_leaf=kind == _LEAF_TABLE)
        found, _, _ = _record(page, at, at + local)
        values.extend((start, min(end, at + local)) for start, end in found)
        cells.append((cell, at + local + (4 if local < payload else 0)))
    return PageLayout(values, cells)

"""Reading the files of a SQLite database this process may have open, keeping its locks.

POSIX record locks belong to a process and an inode, and closing *any* descriptor of the
file releases all of them. SQLite holds such locks on a database file and on its
write-ahead log's shared memory (``-shm``) while a connection is open. A reader that
opened and closed one of those files in a process where SQLite had it open (the erasure
verification's byte search, in the process of ``headwater up``) dropped SQLite's locks:
another process opening the database then took itself for the only user, reset the
shared memory and deleted the log under the first process, which died of SIGBUS in its
next write (``tests/test_livefile.py``).

So each file is opened once per inode and that descriptor is not closed while the path
still names the inode and the inode exists: it is read with ``pread`` at any offset.
A descriptor whose inode was unlinked, or that the path no longer names, is closed once
no reader uses it (the locks on a file no one can open again matter to no one).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LiveFile", "live_file"]


class _Entry:
    __slots__ = ("fd", "inode", "retired", "users")

    def __init__(self, fd: int, inode: tuple[int, int]) -> None:
        self.fd = fd
        self.inode = inode
        self.users = 0
        self.retired = False


_LOCK = threading.Lock()
_OPEN: dict[str, _Entry] = {}
_RETIRED: list[_Entry] = []


class LiveFile:
    """Sequential reads of one file through a shared descriptor (``pread``: each reader
    keeps its own position)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._at = 0

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes from the current position; b"" at the end."""
        data = os.pread(self._fd, size, self._at)
        self._at += len(data)
        return data


def _retire(entry: _Entry) -> None:
    entry.retired = True
    if entry.users == 0:
        os.close(entry.fd)
    else:
        _RETIRED.append(entry)


def _sweep() -> None:
    """Close the descriptors of files deleted since (a test's data directory, a log that
    its last connection removed): no lock on them can matter."""
    for key, entry in list(_OPEN.items()):
        if entry.users == 0 and os.fstat(entry.fd).st_nlink == 0:
            del _OPEN[key]
            _retire(entry)


def _current(path: str) -> _Entry | None:
    entry = _OPEN.get(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if entry is not None:
            del _OPEN[path]
            _retire(entry)
        return None
    inode = (st.st_dev, st.st_ino)
    if entry is not None and entry.inode == inode:
        return entry
    if entry is not None:
        del _OPEN[path]
        _retire(entry)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    fresh = os.fstat(fd)
    entry = _OPEN[path] = _Entry(fd, (fresh.st_dev, fresh.st_ino))
    return entry


@contextmanager
def live_file(path: Path) -> Iterator[LiveFile | None]:
    """The file at ``path`` to read (None if there is none), without ever closing a
    descriptor of a file SQLite may hold locks on."""
    key = os.path.abspath(path)
    with _LOCK:
        _sweep()
        entry = _current(key)
        if entry is not None:
            entry.users += 1
    if entry is None:
        yield None
        return
    try:
        yield LiveFile(entry.fd)
    finally:
        with _LOCK:
            entry.users -= 1
            if entry.retired and entry.users == 0 and entry in _RETIRED:
                _RETIRED.remove(entry)
                os.close(entry.fd)

"""From the local batch directory of earlier versions to state and outputs that are shared.

Earlier versions kept the batch's state (``state.db``), its lock file and its day
aggregates (``derived/``) in ``HEADWATER_BATCH_DIR`` (default ``<home>/batch``). The
state now lives in the control plane and the aggregates beside the archive; the old
files are not read (the first run recomputes every day of its window) but removed,
because the old aggregates hold user ids that erasure no longer reaches there.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

__all__ = ["retire_legacy_dir"]

log = logging.getLogger("headwater.batch")

#: What an earlier version kept in its local batch directory.
_LEGACY_FILES = ("state.db", "state.db-wal", "state.db-shm", ".lock")
_LEGACY_DIRS = ("derived", "duckdb.tmp")


def retire_legacy_dir(root: Path | None, outputs_url: str) -> list[str]:
    """Remove the batch's own files from an old batch directory (and the directory when
    nothing else is in it); the paths removed."""
    if root is None or not root.is_dir():
        return []
    removed = []
    for name in _LEGACY_FILES:
        if (root / name).exists():
            (root / name).unlink()
            removed.append(str(root / name))
    for name in _LEGACY_DIRS:
        if (root / name).exists():
            shutil.rmtree(root / name)
            removed.append(str(root / name))
    with contextlib.suppress(OSError):  # something else is in it: not ours to remove
        root.rmdir()
    if removed:
        log.warning(
            "removed the local batch directory of an earlier version (%s): the batch's "
            "state is now in the control plane and its outputs at %s; the next run "
            "recomputes every day of its window",
            ", ".join(removed),
            outputs_url,
        )
    return removed

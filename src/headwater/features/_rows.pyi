"""Types of the compiled pass over a batch's stored rows (``_rows.pyx``)."""

from collections.abc import Callable, Mapping
from typing import Any

IDS: str
WATERMARK: str
FIRST: str
LATE: str
RECENT_IDS: int
SCAN_IDS: int

class UnsupportedRowError(ValueError): ...

class RowPass:
    def apply_rows(
        self,
        batch: Any,
        rows: Mapping[str, bytes],
        codec: tuple[Callable[[bytes | None], dict[str, Any]], Callable[[dict[str, Any]], bytes]],
        bound: int,
        out: dict[str, bytes],
    ) -> tuple[int, int, int]: ...

def row_pass(features: Any) -> RowPass | None: ...

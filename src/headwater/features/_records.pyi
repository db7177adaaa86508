"""Types of the compiled reader of signal records (``_records.pyx``)."""

from collections.abc import Mapping, Sequence
from typing import Any

from headwater.bus.base import Record

class UnsupportedRecordError(ValueError): ...

def read_batch(
    records: Sequence[Record], stored: Mapping[int, int], runs: bool, batch: Any
) -> Any: ...

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from headwater.features.kinds import SignalView

KIND_CODES: dict[str, int]

class CompiledFeatures:
    def __init__(
        self,
        features: Sequence[
            tuple[
                int,
                str,
                frozenset[str] | None,
                bool,
                int,
                str,
                tuple[str, ...],
                tuple[str, ...],
                tuple[str, ...],
            ]
        ],
        *,
        payload_of: Callable[[SignalView], dict[str, Any]],
        prune: Callable[[dict[int, int], int], None],
        ids_key: str,
        watermark_key: str,
        first_key: str,
        late_key: str,
        recent_ids: int,
        scan_ids: int,
        minute_ms: int,
        hour_ms: int,
        minutes_kept: int,
        hours_kept: int,
    ) -> None: ...
    def __call__(
        self, state: dict[str, Any], signals: Iterable[SignalView], bound: int, /
    ) -> tuple[int, int, int]: ...

def use_slow_iso(slow_iso: Callable[[int], str], /) -> None: ...
def iso_ms(ms: int, /) -> str: ...
def read_recent(value: Any, /) -> list[dict[str, Any]]: ...

MAX_WINDOWS: int

def read_windows(
    value: Any,
    now: int,
    labels: tuple[str, ...],
    spans_ms: tuple[int, ...],
    minute_windows: tuple[bool, ...],
    minute_ms: int,
    hour_ms: int,
    /,
) -> dict[str, dict[str, int]]: ...

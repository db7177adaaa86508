"""Durations as people write them in files, URLs and flags: ``90``, ``"90s"``, ``"7d"``."""

from __future__ import annotations

import re

from headwater.errors import ConfigurationError, HeadwaterError

__all__ = ["parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(
    value: object, where: str, error: type[HeadwaterError] = ConfigurationError
) -> float:
    """Seconds from a number or a string with a unit (ms, s, m, h, d); ``error`` on bad input."""
    if isinstance(value, bool):
        raise error(f"{where}: a duration cannot be a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise error(f"{where}: {value!r} is not a duration (use e.g. 30s, 5m, 1h)")
    if seconds <= 0:
        raise error(f"{where}: a duration must be positive")
    return seconds

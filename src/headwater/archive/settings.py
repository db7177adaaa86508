"""Archive settings from ``HEADWATER_ARCHIVE_*`` variables, beside the deployment's Settings.

- ``HEADWATER_ARCHIVE_URL``: where the archive lives (Settings.archive_url; default
  ``<home>/archive``); object storage by URL, e.g. ``s3://bucket/headwater``.
- ``HEADWATER_ARCHIVE_STORAGE_OPTIONS``: JSON object of deltalake storage options
  (credentials, endpoint, ``AWS_S3_ALLOW_UNSAFE_RENAME`` ...).
- ``HEADWATER_ARCHIVE_RETENTION``: how long deleted files stay before vacuum removes
  them for good (default ``7d``; ``0`` removes them at the next vacuum).
- ``HEADWATER_ARCHIVE_VACUUM_INTERVAL``: how often the consumer vacuums when idle
  (default ``1h``; ``off`` leaves vacuum to ``headwater archive vacuum``).
- ``HEADWATER_ARCHIVE_FLUSH_ROWS`` / ``HEADWATER_ARCHIVE_FLUSH_SECONDS``: one Delta commit
  per this many rows or this many seconds, whichever comes first (default 50000 / 5s).
"""

from __future__ import annotations

import json
import os

import msgspec

from headwater._duration import parse_duration
from headwater.config import Settings
from headwater.errors import ConfigurationError

__all__ = ["ArchiveSettings"]


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def _seconds_or_off(name: str, default: str) -> float | None:
    raw = _env(name) or default
    if raw.lower() in ("off", "never", "none"):
        return None
    return parse_duration(raw, name)


class ArchiveSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How the archive consumer writes, erases and vacuums."""

    url: str
    storage_options: dict[str, str] = {}
    retention_hours: float = 168.0
    vacuum_interval_s: float | None = 3600.0
    flush_rows: int = 50_000
    flush_seconds: float = 5.0

    @classmethod
    def from_env(cls, settings: Settings) -> ArchiveSettings:
        """The archive settings of a deployment."""
        raw_options = _env("HEADWATER_ARCHIVE_STORAGE_OPTIONS")
        try:
            options = json.loads(raw_options) if raw_options else {}
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"HEADWATER_ARCHIVE_STORAGE_OPTIONS: {exc}") from None
        if not isinstance(options, dict):
            raise ConfigurationError("HEADWATER_ARCHIVE_STORAGE_OPTIONS must be a JSON object")
        retention = _env("HEADWATER_ARCHIVE_RETENTION") or "7d"
        retention_s = (
            0.0
            if retention in ("0", "0s", "0h")
            else parse_duration(retention, "HEADWATER_ARCHIVE_RETENTION")
        )
        try:
            rows = int(_env("HEADWATER_ARCHIVE_FLUSH_ROWS") or 50_000)
        except ValueError:
            raise ConfigurationError("HEADWATER_ARCHIVE_FLUSH_ROWS must be an integer") from None
        return cls(
            url=settings.archive_url,
            storage_options={str(k): str(v) for k, v in options.items()},
            retention_hours=retention_s / 3600,
            vacuum_interval_s=_seconds_or_off("HEADWATER_ARCHIVE_VACUUM_INTERVAL", "1h"),
            flush_rows=max(1, rows),
            flush_seconds=parse_duration(
                _env("HEADWATER_ARCHIVE_FLUSH_SECONDS") or "5s", "HEADWATER_ARCHIVE_FLUSH_SECONDS"
            ),
        )

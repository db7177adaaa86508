"""Structured logs: one JSON object per line, with the ids that connect components.

``request_id`` (an HTTP publish or deletion request), ``erasure_request_id`` and
``event_ids`` appear on the lines of every component that touched them, so one grep
follows a publish from the gateway through each consumer, and an erasure from the API
through every store's confirmation.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
from typing import Any

import msgspec

from headwater._time import format_ms

__all__ = ["REQUEST_ID", "JsonFormatter", "configure_logging"]

#: The request being served, set by the gateway for each HTTP request.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "headwater_request_id", default=None
)

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_encode = msgspec.json.Encoder(enc_hook=str).encode
#: Terminal control sequences (colours, cursor moves) that libraries put in their messages
#: and tracebacks: a log line for machines carries the text only.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def _plain(value: Any) -> Any:
    return _ANSI.sub("", value) if isinstance(value, str) and "\x1b" in value else value


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object, extra fields included."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": format_ms(int(record.created * 1000)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _plain(record.getMessage()),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            doc["request_id"] = request_id
        doc.update(
            (k, _plain(v))
            for k, v in record.__dict__.items()
            if k not in _STANDARD and not k.startswith("_")
        )
        if record.exc_info:
            doc["exc"] = _plain(self.formatException(record.exc_info))
        return _encode(doc).decode()


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Log to stderr: JSON unless ``HEADWATER_LOG_FORMAT=text``; ``HEADWATER_LOG_LEVEL``."""
    level = (level or os.environ.get("HEADWATER_LOG_LEVEL", "INFO")).upper()
    fmt = fmt or os.environ.get("HEADWATER_LOG_FORMAT", "json")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-request access lines from the server add nothing to our own publish lines.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)

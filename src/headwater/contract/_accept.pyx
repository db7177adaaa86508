# cython: language_level=3, boundscheck=False, wraparound=False
"""The checks of a batch's fast path after msgspec decoded it, in one compiled loop.

``validator._accepts_py`` is the same loop in Python, where this module is not built:
each event's timestamp within the batch's window, none of the envelope's fields
(``producer``, ``received_at``, ``schema_version``, ``request_id``) set by the producer,
and a timestamp given with an offset moved to UTC.
"""

from cpython.datetime cimport datetime, datetime_tzinfo, import_datetime

import datetime as _dt

import_datetime()

cdef object UTC = _dt.UTC


def accepts(list events, datetime oldest, datetime newest, object unset):
    """True when every event passes (its timestamp now in UTC); False at the first that
    does not (the batch then takes the per-event path, which decodes it again)."""
    cdef object event, ts
    for event in events:
        ts = event.timestamp
        if not (oldest <= ts <= newest):
            return False
        if (
            event.producer is not unset
            or event.received_at is not unset
            or event.schema_version is not unset
            or event.request_id is not unset
        ):
            return False
        if datetime_tzinfo(ts) is not UTC:
            event.timestamp = ts.astimezone(UTC)
    return True

# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The gateway's bus records for a batch of validated events, written in one compiled pass.

A record of version 2 (``contract.signal.RECORD_FIELDS``) is a MessagePack array of the
signal's fields. The Python path (``ingest.ingestor._encode_records_py``) makes a tuple of
them for each event and has msgspec encode it; here each record is written straight into
one buffer: the event's strings, its timestamp and its item, msgspec's bytes for its
payload, and the fields every event of a type shares in the batch (its tag, the producer,
the time it was received, its schema version, the request's id) written once per type.
An event whose fields are not of the types validation gives (a timestamp that is not a
``datetime`` in UTC, a field that is not a string) has its record encoded by msgspec, as
the Python path does: the bytes are the same either way.
"""

from cpython.datetime cimport (
    datetime,
    datetime_day,
    datetime_hour,
    datetime_microsecond,
    datetime_minute,
    datetime_month,
    datetime_second,
    datetime_tzinfo,
    datetime_year,
    import_datetime,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free
from headwater._buffer cimport Buf, put, put_be, put_byte, put_str, take

import datetime as _dt

import_datetime()

cdef object UTC = _dt.UTC


cdef inline int64_t days_from_civil(int64_t y, int64_t m, int64_t d) noexcept:
    """Days since 1970-01-01 of a proleptic Gregorian date."""
    y -= m <= 2
    cdef int64_t era = (y if y >= 0 else y - 399) // 400
    cdef int64_t yoe = y - era * 400
    cdef int64_t doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    cdef int64_t doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef int put_utc_timestamp(Buf *b, datetime ts) except -1:
    """A datetime in UTC as MessagePack's timestamp extension (type -1), in the smallest
    of its three forms, as msgspec writes it."""
    cdef int64_t seconds = (
        days_from_civil(datetime_year(ts), datetime_month(ts), datetime_day(ts)) * 86400
        + datetime_hour(ts) * 3600
        + datetime_minute(ts) * 60
        + datetime_second(ts)
    )
    cdef uint64_t nanos = <uint64_t>datetime_microsecond(ts) * 1000
    cdef uint64_t data64
    cdef char ext[15]
    cdef int i
    if (seconds >> 34) == 0:
        data64 = (nanos << 34) | <uint64_t>seconds
        if (data64 & 0xFFFFFFFF00000000) == 0:
            put_be(b, 0xD6, 0xFF, 1)  # fixext 4, type -1
            return put_be(b, <unsigned char>(data64 >> 24), data64 & 0xFFFFFF, 3)
        put_be(b, 0xD7, 0xFF, 1)  # fixext 8, type -1
        return put_be(b, <unsigned char>(data64 >> 56), data64 & 0xFFFFFFFFFFFFFF, 7)
    # ext 8 of 12 bytes, type -1: nanoseconds (4 bytes), then seconds (8, signed)
    ext[0] = <char>0xC7
    ext[1] = 12
    ext[2] = <char>0xFF
    for i in range(4):
        ext[3 + i] = <char>((nanos >> (8 * (3 - i))) & 0xFF)
    for i in range(8):
        ext[7 + i] = <char>((<uint64_t>seconds >> (8 * (7 - i))) & 0xFF)
    return put(b, ext, 15)


cdef inline int put_bytes(Buf *b, bytes data) except -1:
    return put(b, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


cdef class _Kind:
    """What every event of one type shares in a batch's records, encoded once."""

    cdef bytes tag
    cdef bytes tail


def encode_records(
    list events,
    list messages,
    list entries,
    *,
    str producer,
    object received_at,
    str request_id,
    object encode,
    object message,
):
    """Append to ``messages`` a ``message(user_id, record)`` for each validated event,
    and to ``entries`` its ``(event_id, user_id)``; ``record`` is what
    ``encode((event_id, event_type, user_id, surface, timestamp, payload, item_id,
    producer, received_at, schema_version, request_id))`` returns, ``encode`` being the
    MessagePack encoder of records."""
    cdef Buf b
    cdef dict kinds = {}
    cdef _Kind k
    cdef object event, kind, event_id, user_id, surface, ts, item_id
    cdef bytes record
    b.data = NULL
    b.size = 0
    b.cap = 0
    try:
        for event in events:
            kind = type(event)
            k = kinds.get(kind)
            if k is None:
                k = _Kind()
                k.tag = encode(kind.__struct_config__.tag)
                k.tail = encode((producer, received_at, kind.schema_version_of_type, request_id))[1:]
                kinds[kind] = k
            event_id = event.event_id
            user_id = event.user_id
            surface = event.surface
            ts = event.timestamp
            item_id = event.item_id
            if (
                type(event_id) is str
                and type(user_id) is str
                and type(surface) is str
                and (item_id is None or type(item_id) is str)
                and type(ts) is datetime
                and datetime_tzinfo(ts) is UTC
            ):
                b.size = 0
                put_byte(&b, <char>0x9B)  # an array of the 11 fields
                put_str(&b, event_id)
                put_bytes(&b, k.tag)
                put_str(&b, user_id)
                put_str(&b, surface)
                put_utc_timestamp(&b, ts)
                put_bytes(&b, encode(event.payload))
                if item_id is None:
                    put_byte(&b, <char>0xC0)
                else:
                    put_str(&b, item_id)
                put_bytes(&b, k.tail)
                record = take(&b)
            else:
                record = encode(
                    (
                        event_id,
                        kind.__struct_config__.tag,
                        user_id,
                        surface,
                        ts,
                        event.payload,
                        item_id,
                        producer,
                        received_at,
                        kind.schema_version_of_type,
                        request_id,
                    )
                )
            messages.append(message(user_id, record))
            entries.append((event_id, user_id))
    finally:
        free(b.data)

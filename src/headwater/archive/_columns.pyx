# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Bus records to the archive's columns, compiled to C: no Python object per signal.

``record_columns`` reads each record's bytes (a signal as ``headwater.contract.signal``
encodes it: a MessagePack array of ``RECORD_FIELDS``, or a record of version 1, a map
keyed by field name; timestamps as the MessagePack timestamp extension) and appends its
fields straight to Arrow buffers: strings as offsets and bytes, times as microseconds,
the payload transcoded to the JSON text msgspec writes for it (a property test holds the
two to the same bytes), its five extracted fields typed as ``schema.signals_to_arrow``
types them, and the event's UTC date. Only floats in a payload go through Python
(msgspec formats them).

Anything the decoder of ``Signal`` would read differently from this reader (a field of
another type, a binary or extension value in a payload, a timestamp given as text, a
batch too large for 32-bit offsets) raises ``UnsupportedRecordError``: the caller then decodes that
batch with msgspec as before, and gets msgspec's verdict on a malformed record.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memset
from headwater._buffer cimport Buf, put, put_byte, reserve, take
from headwater._msgpack cimport (
    Reader, Span, fnv1a, hw_be16, hw_be32, hw_be64, hw_f32, hw_f64, is_array_head, is_nil, named,
    need, read_array, read_int, read_map, read_str, read_timestamp,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

import msgspec

_float_json = msgspec.json.Encoder().encode


class UnsupportedRecordError(ValueError):
    """A record this reader does not take; decode the batch with msgspec instead."""


# -- columns ------------------------------------------------------------------------

cdef struct Column:
    Buf values     # fixed-width values, or string bytes
    Buf offsets    # int32 offsets (strings only)
    Buf valid      # one byte per row: 1 when the row has a value
    Py_ssize_t nulls


cdef int col_start(Column *c, bint text) except -1:
    cdef int32_t zero = 0
    if text:
        put(&c.offsets, <const char *>&zero, 4)
    return 0


cdef int col_end_string(Column *c) except -1:
    if c.values.size > 0x7FFFFFFF:
        raise UnsupportedRecordError("a batch over 2 GiB of one column")
    cdef int32_t end = <int32_t>c.values.size
    put(&c.offsets, <const char *>&end, 4)
    put_byte(&c.valid, 1)
    return 0


cdef int col_string(Column *c, const char *p, Py_ssize_t n) except -1:
    put(&c.values, p, n)
    col_end_string(c)
    return 0


cdef int col_null(Column *c, Py_ssize_t width) except -1:
    cdef int32_t end
    if width:
        reserve(&c.values, width)
        memset(c.values.data + c.values.size, 0, width)
        c.values.size += width
    else:
        end = <int32_t>c.values.size
        put(&c.offsets, <const char *>&end, 4)
    put_byte(&c.valid, 0)
    c.nulls += 1
    return 0


cdef int col_fixed(Column *c, const void *p, Py_ssize_t width) except -1:
    put(&c.values, <const char *>p, width)
    put_byte(&c.valid, 1)
    return 0


cdef object bitmap(Column *c, Py_ssize_t rows):
    """The validity bitmap Arrow expects (None when every row has a value)."""
    if c.nulls == 0:
        return None
    cdef bytes out = PyBytes_FromStringAndSize(NULL, (rows + 7) // 8)
    cdef uint8_t *bits = <uint8_t *>PyBytes_AS_STRING(out)
    cdef Py_ssize_t i
    memset(bits, 0, (rows + 7) // 8)
    for i in range(rows):
        if c.valid.data[i]:
            bits[i >> 3] |= <uint8_t>(1 << (i & 7))
    return out


cdef void col_free(Column *c):
    free(c.values.data)
    free(c.offsets.data)
    free(c.valid.data)


# -- MessagePack reading: _msgpack.pxd ----------------------------------------------

# The kinds of number a payload value can be (for the extracted columns).
cdef enum:
    NUM_NONE = 0
    NUM_INT = 1
    NUM_UINT = 2
    NUM_FLOAT = 3


cdef struct Number:
    int kind
    int64_t i
    uint64_t u
    double f


cdef int64_t floor_div(int64_t a, int64_t b) noexcept:
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


# -- JSON writing -------------------------------------------------------------------

cdef const char *HEX = "0123456789abcdef"


cdef int json_string(Buf *b, const char *s, Py_ssize_t n) except -1:
    """A JSON string as msgspec writes it: quote, backslash and control characters
    escaped (the short forms for \\b \\t \\n \\f \\r), everything else as it is."""
    cdef Py_ssize_t i, start = 0
    cdef unsigned char c
    cdef char esc[6]
    reserve(b, n + 2)
    put_byte(b, b'"')
    for i in range(n):
        c = <unsigned char>s[i]
        if c >= 0x20 and c != b'"' and c != b'\\':
            continue
        put(b, s + start, i - start)
        start = i + 1
        if c == b'"' or c == b'\\':
            esc[0] = b'\\'; esc[1] = <char>c
            put(b, esc, 2)
        elif c == 0x08:
            put(b, "\\b", 2)
        elif c == 0x09:
            put(b, "\\t", 2)
        elif c == 0x0A:
            put(b, "\\n", 2)
        elif c == 0x0C:
            put(b, "\\f", 2)
        elif c == 0x0D:
            put(b, "\\r", 2)
        else:
            esc[0] = b'\\'; esc[1] = b'u'; esc[2] = b'0'; esc[3] = b'0'
            esc[4] = HEX[c >> 4]; esc[5] = HEX[c & 0xF]
            put(b, esc, 6)
    put(b, s + start, n - start)
    put_byte(b, b'"')
    return 0


cdef int json_uint(Buf *b, uint64_t u) except -1:
    cdef char digits[24]
    cdef int i = 24
    if u == 0:
        return put_byte(b, b'0')
    while u:
        i -= 1
        digits[i] = <char>(48 + u % 10)
        u //= 10
    return put(b, digits + i, 24 - i)


cdef int json_int(Buf *b, int64_t v) except -1:
    if v < 0:
        put_byte(b, b'-')
        return json_uint(b, <uint64_t>0 - <uint64_t>v)
    return json_uint(b, <uint64_t>v)


cdef int json_float(Buf *b, double f) except -1:
    cdef bytes text = _float_json(f)
    return put(b, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))


cdef int json_value(Reader *r, Buf *b, int depth, Number *num) except -1:
    """Transcode one MessagePack value to JSON; ``num`` gets it when it is a number."""
    need(r, 1)
    cdef unsigned char t = r.p[0]
    cdef const char *s
    cdef Py_ssize_t n, i, keylen
    cdef int64_t v
    cdef uint64_t u
    cdef double f
    if num != NULL:
        num.kind = NUM_NONE
    if depth > 64:
        raise UnsupportedRecordError("a payload nested deeper than 64")
    if t <= 0x7F or t >= 0xE0 or 0xD0 <= t <= 0xD3 or 0xCC <= t <= 0xCE:
        read_int(r, &v)
        if num != NULL:
            num.kind = NUM_INT; num.i = v
        return json_int(b, v)
    if t == 0xCF:
        need(r, 9)
        u = hw_be64(r.p + 1)
        r.p += 9
        if num != NULL:
            num.kind = NUM_UINT; num.u = u
        return json_uint(b, u)
    if 0xA0 <= t <= 0xBF or 0xD9 <= t <= 0xDB:
        read_str(r, &s, &n)
        return json_string(b, s, n)
    if t == 0xC0:
        r.p += 1
        return put(b, "null", 4)
    if t == 0xC2:
        r.p += 1
        return put(b, "false", 5)
    if t == 0xC3:
        r.p += 1
        return put(b, "true", 4)
    if t == 0xCB or t == 0xCA:
        if t == 0xCB:
            need(r, 9); f = hw_f64(hw_be64(r.p + 1)); r.p += 9
        else:
            need(r, 5); f = hw_f32(hw_be32(r.p + 1)); r.p += 5
        if num != NULL:
            num.kind = NUM_FLOAT; num.f = f
        return json_float(b, f)
    if 0x80 <= t <= 0x8F or t == 0xDE or t == 0xDF:
        n = read_map(r)
        put_byte(b, b'{')
        for i in range(n):
            if i:
                put_byte(b, b',')
            read_str(r, &s, &keylen)  # keys are strings (dict[str, Any])
            json_string(b, s, keylen)
            put_byte(b, b':')
            json_value(r, b, depth + 1, NULL)
        return put_byte(b, b'}')
    if 0x90 <= t <= 0x9F or t == 0xDC or t == 0xDD:
        n = read_array(r)
        put_byte(b, b'[')
        for i in range(n):
            if i:
                put_byte(b, b',')
            json_value(r, b, depth + 1, NULL)
        return put_byte(b, b']')
    raise UnsupportedRecordError("a payload value of a type JSON has not (binary or extension)")


# -- records ------------------------------------------------------------------------

# The archive's columns this reader fills, in the order of ``schema.ARCHIVE_SCHEMA``
# (``subject`` is computed per distinct user by the caller).
cdef enum:
    C_EVENT_ID = 0
    C_EVENT_TYPE
    C_USER_ID
    C_ITEM_ID
    C_SURFACE
    C_TIMESTAMP
    C_RECEIVED_AT
    C_PRODUCER
    C_SCHEMA_VERSION
    C_PAYLOAD
    C_CATEGORY
    C_BRAND
    C_PRICE
    C_QUANTITY
    C_RATING
    C_DATE
    N_COLUMNS

#: Whether each column holds text (offsets and bytes) or fixed-width values.
cdef bint TEXT[16]
TEXT[:] = [True, True, True, True, True, False, False, True, False, True, True, True,
           False, False, False, True]
#: The width of a fixed-width column's values.
cdef Py_ssize_t WIDTH[16]
WIDTH[:] = [0, 0, 0, 0, 0, 8, 8, 0, 4, 0, 0, 0, 8, 4, 8, 0]


cdef int civil_date(int64_t days, char *out) except -1:
    """``YYYY-MM-DD`` of a day counted from 1970-01-01 (Howard Hinnant's algorithm)."""
    cdef int64_t z = days + 719468
    cdef int64_t era = floor_div(z, 146097)
    cdef int64_t doe = z - era * 146097
    cdef int64_t yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef int64_t y = yoe + era * 400
    cdef int64_t doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef int64_t mp = (5 * doy + 2) // 153
    cdef int64_t d = doy - (153 * mp + 2) // 5 + 1
    cdef int64_t m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    out[0] = <char>(48 + y // 1000 % 10)
    out[1] = <char>(48 + y // 100 % 10)
    out[2] = <char>(48 + y // 10 % 10)
    out[3] = <char>(48 + y % 10)
    out[4] = b'-'
    out[5] = <char>(48 + m // 10)
    out[6] = <char>(48 + m % 10)
    out[7] = b'-'
    out[8] = <char>(48 + d // 10)
    out[9] = <char>(48 + d % 10)
    return 0


cdef int payload_into(Reader *r, Column *cols) except -1:
    """The payload map as JSON text, and its five extracted fields."""
    cdef Py_ssize_t n = read_map(r)
    cdef Py_ssize_t i, keylen, vlen
    cdef const char *key
    cdef const char *s
    cdef Span category, brand
    cdef Number price, quantity, rating
    cdef Buf *b = &cols[C_PAYLOAD].values
    cdef int32_t q
    category.present = False
    brand.present = False
    price.kind = NUM_NONE
    quantity.kind = NUM_NONE
    rating.kind = NUM_NONE
    if n == 0:  # an empty payload is stored as null, as for a signal without one
        col_null(&cols[C_PAYLOAD], 0)
    else:
        put_byte(b, b'{')
        for i in range(n):
            if i:
                put_byte(b, b',')
            read_str(r, &key, &keylen)
            json_string(b, key, keylen)
            put_byte(b, b':')
            need(r, 1)
            if named(key, keylen, "category", 8) or named(key, keylen, "brand", 5):
                if 0xA0 <= r.p[0] <= 0xBF or 0xD9 <= r.p[0] <= 0xDB:
                    read_str(r, &s, &vlen)
                    json_string(b, s, vlen)
                    if keylen == 8:
                        category.p = s; category.n = vlen; category.present = True
                    else:
                        brand.p = s; brand.n = vlen; brand.present = True
                else:
                    json_value(r, b, 1, NULL)
                    if keylen == 8:
                        category.present = False
                    else:
                        brand.present = False
            elif named(key, keylen, "price", 5):
                json_value(r, b, 1, &price)
            elif named(key, keylen, "quantity", 8):
                json_value(r, b, 1, &quantity)
            elif named(key, keylen, "rating", 6):
                json_value(r, b, 1, &rating)
            else:
                json_value(r, b, 1, NULL)
        put_byte(b, b'}')
        col_end_string(&cols[C_PAYLOAD])
    if category.present:
        col_string(&cols[C_CATEGORY], category.p, category.n)
    else:
        col_null(&cols[C_CATEGORY], 0)
    if brand.present:
        col_string(&cols[C_BRAND], brand.p, brand.n)
    else:
        col_null(&cols[C_BRAND], 0)
    number_into(&price, &cols[C_PRICE])
    number_into(&rating, &cols[C_RATING])
    if quantity.kind == NUM_INT and -2147483648LL <= quantity.i <= 2147483647LL:
        q = <int32_t>quantity.i
        col_fixed(&cols[C_QUANTITY], &q, 4)
    else:
        col_null(&cols[C_QUANTITY], 4)
    return 0


cdef int number_into(Number *num, Column *col) except -1:
    """A payload number as float64 (``schema._number``); null for anything else."""
    cdef double f
    if num.kind == NUM_INT:
        f = <double>num.i
    elif num.kind == NUM_UINT:
        f = <double>num.u
    elif num.kind == NUM_FLOAT:
        f = num.f
    else:
        return col_null(col, 8)
    return col_fixed(col, &f, 8)


cdef int record_into(const unsigned char *data, Py_ssize_t size, Column *cols) except -1:
    cdef Reader r
    r.p = data
    r.end = data + size
    cdef Py_ssize_t fields
    cdef Py_ssize_t i, keylen
    cdef const char *key
    cdef Span event_id, event_type, user_id, surface, item_id, producer
    cdef int64_t timestamp = 0, received_at = 0, version = 0
    cdef bint have_timestamp = False, have_received = False, have_payload = False
    cdef int32_t version32
    cdef char date[10]
    event_id.present = event_type.present = user_id.present = surface.present = False
    item_id.present = producer.present = False
    if is_array_head(data, size):
        # A record of version 2: the fields in RECORD_FIELDS order (those missing at the
        # end take their defaults, as msgspec reads it). A longer array, a later version's
        # fields, is left to msgspec, as a map's field the archive does not know is.
        fields = read_array(&r)
        if fields < 5 or fields > 11:
            raise UnsupportedRecordError("a record of another length")
        read_str(&r, &event_id.p, &event_id.n); event_id.present = True
        read_str(&r, &event_type.p, &event_type.n); event_type.present = True
        read_str(&r, &user_id.p, &user_id.n); user_id.present = True
        read_str(&r, &surface.p, &surface.n); surface.present = True
        read_timestamp(&r, &timestamp); have_timestamp = True
        if fields > 5:
            payload_into(&r, cols)
            have_payload = True
        if fields > 6 and not is_nil(&r):
            read_str(&r, &item_id.p, &item_id.n); item_id.present = True
        if fields > 7:
            read_str(&r, &producer.p, &producer.n); producer.present = True
        if fields > 8 and not is_nil(&r):
            read_timestamp(&r, &received_at); have_received = True
        if fields > 9:
            read_int(&r, &version)
            if not -2147483648LL <= version <= 2147483647LL:
                raise UnsupportedRecordError("a schema version out of range")
        if fields > 10:
            read_str(&r, &key, &keylen)  # the envelope's request id is not archived
        fields = 0  # no map follows; the checks after its loop hold for both versions
    else:
        fields = read_map(&r)
    for i in range(fields):
        read_str(&r, &key, &keylen)
        if named(key, keylen, "event_id", 8):
            read_str(&r, &event_id.p, &event_id.n); event_id.present = True
        elif named(key, keylen, "event_type", 10):
            read_str(&r, &event_type.p, &event_type.n); event_type.present = True
        elif named(key, keylen, "user_id", 7):
            read_str(&r, &user_id.p, &user_id.n); user_id.present = True
        elif named(key, keylen, "surface", 7):
            read_str(&r, &surface.p, &surface.n); surface.present = True
        elif named(key, keylen, "item_id", 7):
            if is_nil(&r):
                item_id.present = False
            else:
                read_str(&r, &item_id.p, &item_id.n); item_id.present = True
        elif named(key, keylen, "producer", 8):
            read_str(&r, &producer.p, &producer.n); producer.present = True
        elif named(key, keylen, "timestamp", 9):
            read_timestamp(&r, &timestamp); have_timestamp = True
        elif named(key, keylen, "received_at", 11):
            if is_nil(&r):
                have_received = False
            else:
                read_timestamp(&r, &received_at); have_received = True
        elif named(key, keylen, "schema_version", 14):
            read_int(&r, &version)
            if not -2147483648LL <= version <= 2147483647LL:
                raise UnsupportedRecordError("a schema version out of range")
        elif named(key, keylen, "payload", 7):
            if have_payload:
                raise UnsupportedRecordError("a record that repeats its payload")
            payload_into(&r, cols)
            have_payload = True
        elif named(key, keylen, "request_id", 10):
            read_str(&r, &key, &keylen)  # the envelope's request id is not archived
        else:
            raise UnsupportedRecordError("a field the archive does not know")
    if r.p != r.end:
        raise UnsupportedRecordError("bytes after the record")
    if not (event_id.present and event_type.present and user_id.present and surface.present
            and have_timestamp):
        raise UnsupportedRecordError("a record without a required field")
    col_string(&cols[C_EVENT_ID], event_id.p, event_id.n)
    col_string(&cols[C_EVENT_TYPE], event_type.p, event_type.n)
    col_string(&cols[C_USER_ID], user_id.p, user_id.n)
    if item_id.present:
        col_string(&cols[C_ITEM_ID], item_id.p, item_id.n)
    else:
        col_null(&cols[C_ITEM_ID], 0)
    col_string(&cols[C_SURFACE], surface.p, surface.n)
    col_fixed(&cols[C_TIMESTAMP], &timestamp, 8)
    if have_received:
        col_fixed(&cols[C_RECEIVED_AT], &received_at, 8)
    else:
        col_null(&cols[C_RECEIVED_AT], 8)
    if producer.present:
        col_string(&cols[C_PRODUCER], producer.p, producer.n)
    else:
        col_string(&cols[C_PRODUCER], "", 0)
    version32 = <int32_t>version
    col_fixed(&cols[C_SCHEMA_VERSION], &version32, 4)
    if not have_payload:
        payload_into_empty(cols)
    civil_date(floor_div(timestamp, 86400000000LL), date)
    col_string(&cols[C_DATE], date, 10)
    return 0


cdef int payload_into_empty(Column *cols) except -1:
    col_null(&cols[C_PAYLOAD], 0)
    col_null(&cols[C_CATEGORY], 0)
    col_null(&cols[C_BRAND], 0)
    col_null(&cols[C_PRICE], 8)
    col_null(&cols[C_QUANTITY], 4)
    col_null(&cols[C_RATING], 8)
    return 0


def record_columns(list values):
    """The archive's columns (all but ``subject``) of encoded signals, one row each.

    Returns a list, in the order of ``schema.ARCHIVE_SCHEMA``, of
    ``(validity, offsets, values, null_count)``: ``validity`` is an Arrow bitmap or None
    when every row has a value, ``offsets`` None for fixed-width columns. Raises
    ``UnsupportedRecordError`` for a record this reader does not take.
    """
    cdef Column cols[16]
    cdef Py_ssize_t rows = len(values)
    cdef Py_ssize_t i
    cdef bytes value
    memset(cols, 0, sizeof(cols))
    try:
        for i in range(N_COLUMNS):
            col_start(&cols[i], TEXT[i])
            if not TEXT[i]:
                reserve(&cols[i].values, WIDTH[i] * rows)
        try:
            for value in values:
                record_into(<const unsigned char *>PyBytes_AS_STRING(value),
                            PyBytes_GET_SIZE(value), cols)
        except UnsupportedRecordError:
            raise
        except ValueError as error:  # a MessagePack reader's (_msgpack.pxd)
            raise UnsupportedRecordError(*error.args) from None
        out = []
        for i in range(N_COLUMNS):
            out.append((
                bitmap(&cols[i], rows),
                take(&cols[i].offsets) if TEXT[i] else None,
                take(&cols[i].values),
                cols[i].nulls,
            ))
        return out
    finally:
        for i in range(N_COLUMNS):
            col_free(&cols[i])


def distinct_strings(bytes offsets, bytes values, Py_ssize_t rows):
    """True when the ``rows`` strings of a string column (``record_columns``' 32-bit
    offsets and bytes) are all different; False when two may be equal, for the caller
    to check exactly.

    Each string's 64-bit FNV-1a goes into an open-addressed table: a hash met twice
    answers False (two equal strings, or two whose hashes collide), so True is exact.
    It takes no Python object per string and no copy of the bytes, where Arrow's
    ``count_distinct`` copies each into a table of its own.
    """
    if rows < 2:
        return True
    if PyBytes_GET_SIZE(offsets) < (rows + 1) * 4:
        raise ValueError(f"{PyBytes_GET_SIZE(offsets)} bytes of offsets for {rows} strings")
    cdef const int32_t *at = <const int32_t *>PyBytes_AS_STRING(offsets)
    cdef const char *text = PyBytes_AS_STRING(values)
    if at[0] < 0 or at[rows] > PyBytes_GET_SIZE(values):
        raise ValueError("offsets beyond the column's bytes")
    cdef Py_ssize_t size = 16
    while size < 2 * rows:
        size *= 2
    cdef uint64_t mask = <uint64_t>(size - 1)
    cdef uint64_t *seen = <uint64_t *>calloc(size, sizeof(uint64_t))
    if seen == NULL:
        raise MemoryError()
    cdef Py_ssize_t i
    cdef uint64_t h, slot
    try:
        for i in range(rows):
            if at[i + 1] < at[i]:
                raise ValueError("offsets that go back")
            h = fnv1a(text + at[i], at[i + 1] - at[i])
            if h == 0:
                h = 1  # 0 marks an empty slot
            slot = (h ^ (h >> 29)) * 0xBF58476D1CE4E5B9ULL
            slot = (slot ^ (slot >> 32)) & mask
            while seen[slot] != 0:
                if seen[slot] == h:
                    return False
                slot = (slot + 1) & mask
            seen[slot] = h
        return True
    finally:
        free(seen)

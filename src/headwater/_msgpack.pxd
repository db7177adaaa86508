# Reading MessagePack from C: the readers of bus records (the archive's columns, the
# feature consumer's batches) share these. A reader stops at the first value it does not
# take with a ValueError, which the module reading the batch raises as its
# ``UnsupportedRecordError``: the caller then decodes the batch with msgspec, which
# gives its own verdict on a malformed record.
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    static inline uint16_t hw_be16(const unsigned char *p) {
        return (uint16_t)((p[0] << 8) | p[1]);
    }
    static inline uint32_t hw_be32(const unsigned char *p) {
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    }
    static inline uint64_t hw_be64(const unsigned char *p) {
        return ((uint64_t)hw_be32(p) << 32) | hw_be32(p + 4);
    }
    static inline double hw_f64(uint64_t bits) {
        double d; memcpy(&d, &bits, 8); return d;
    }
    static inline float hw_f32(uint32_t bits) {
        float f; memcpy(&f, &bits, 4); return f;
    }
    """
    uint16_t hw_be16(const unsigned char *p) nogil
    uint32_t hw_be32(const unsigned char *p) nogil
    uint64_t hw_be64(const unsigned char *p) nogil
    double hw_f64(uint64_t bits) nogil
    float hw_f32(uint32_t bits) nogil


cdef struct Reader:
    const unsigned char *p
    const unsigned char *end


cdef inline int need(Reader *r, Py_ssize_t n) except -1:
    if r.end - r.p < n:
        raise ValueError("a record ends early")
    return 0


cdef inline int take_fix(Reader *r, Py_ssize_t length, const char **out, Py_ssize_t *n) except -1:
    """``length`` bytes at the reader, their header read."""
    need(r, length)
    out[0] = <const char *>r.p
    n[0] = length
    r.p += length
    return 0


cdef inline int take_sized(Reader *r, int width, const char **out, Py_ssize_t *n) except -1:
    """The bytes after a header of a type byte and a ``width``-byte length (1, 2 or 4)."""
    cdef Py_ssize_t length
    need(r, 1 + width)
    if width == 1:
        length = r.p[1]
    elif width == 2:
        length = hw_be16(r.p + 1)
    else:
        length = hw_be32(r.p + 1)
    r.p += 1 + width
    return take_fix(r, length, out, n)


cdef inline int read_str(Reader *r, const char **out, Py_ssize_t *n) except -1:
    """A string's bytes; raises when the next value is not a string."""
    need(r, 1)
    cdef unsigned char t = r.p[0]
    if 0xA0 <= t <= 0xBF:
        r.p += 1
        return take_fix(r, t & 0x1F, out, n)
    if 0xD9 <= t <= 0xDB:  # str 8, 16, 32: a length of 1, 2 or 4 bytes
        return take_sized(r, 1 << (t - 0xD9), out, n)
    raise ValueError("a string field holds another type")


cdef inline int read_bin(Reader *r, const char **out, Py_ssize_t *n) except -1:
    """A bin value's bytes; raises when the next value is not bin."""
    need(r, 1)
    cdef unsigned char t = r.p[0]
    if 0xC4 <= t <= 0xC6:  # bin 8, 16, 32: a length of 1, 2 or 4 bytes
        return take_sized(r, 1 << (t - 0xC4), out, n)
    raise ValueError("not bin")


cdef inline int is_utf8(const char *p, Py_ssize_t n) except -1:
    """1 when ``p[:n]`` is UTF-8, else 0: ASCII is found at once, other text decoded once
    and not kept (what msgspec checks of a string)."""
    cdef Py_ssize_t i
    for i in range(n):
        if <unsigned char>p[i] >= 0x80:
            try:
                PyUnicode_DecodeUTF8(p, n, NULL)
            except UnicodeDecodeError:
                return 0
            return 1
    return 1


cdef inline Py_ssize_t read_map(Reader *r) except -1:
    need(r, 1)
    cdef unsigned char t = r.p[0]
    cdef Py_ssize_t n
    if 0x80 <= t <= 0x8F:
        r.p += 1
        return t & 0x0F
    if t == 0xDE:
        need(r, 3)
        n = hw_be16(r.p + 1)
        r.p += 3
        return n
    if t == 0xDF:
        need(r, 5)
        n = hw_be32(r.p + 1)
        r.p += 5
        return n
    raise ValueError("not a map")


cdef inline bint is_array_head(const unsigned char *p, Py_ssize_t n) noexcept:
    """Whether ``p[:n]`` starts with an array's header (a signal record of version 2;
    ``contract.signal.is_array_record``)."""
    return n > 0 and (0x90 <= p[0] <= 0x9F or p[0] == 0xDC or p[0] == 0xDD)


cdef inline Py_ssize_t read_array(Reader *r) except -1:
    need(r, 1)
    cdef unsigned char t = r.p[0]
    cdef Py_ssize_t n
    if 0x90 <= t <= 0x9F:
        r.p += 1
        return t & 0x0F
    if t == 0xDC:
        need(r, 3)
        n = hw_be16(r.p + 1)
        r.p += 3
        return n
    if t == 0xDD:
        need(r, 5)
        n = hw_be32(r.p + 1)
        r.p += 5
        return n
    raise ValueError("not an array")


cdef inline bint is_nil(Reader *r):
    if r.p < r.end and r.p[0] == 0xC0:
        r.p += 1
        return True
    return False


cdef inline int read_int(Reader *r, int64_t *out) except -1:
    """A signed integer that fits in 64 bits (the schema version)."""
    need(r, 1)
    cdef unsigned char t = r.p[0]
    cdef uint64_t u
    if t <= 0x7F:
        out[0] = t
        r.p += 1
    elif t >= 0xE0:
        out[0] = <int64_t>(<signed char>t)
        r.p += 1
    elif t == 0xCC:
        need(r, 2); out[0] = r.p[1]; r.p += 2
    elif t == 0xCD:
        need(r, 3); out[0] = hw_be16(r.p + 1); r.p += 3
    elif t == 0xCE:
        need(r, 5); out[0] = hw_be32(r.p + 1); r.p += 5
    elif t == 0xCF:
        need(r, 9)
        u = hw_be64(r.p + 1)
        if u > 0x7FFFFFFFFFFFFFFFULL:
            raise ValueError("an integer field out of range")
        out[0] = <int64_t>u; r.p += 9
    elif t == 0xD0:
        need(r, 2); out[0] = <signed char>r.p[1]; r.p += 2
    elif t == 0xD1:
        need(r, 3); out[0] = <short>hw_be16(r.p + 1); r.p += 3
    elif t == 0xD2:
        need(r, 5); out[0] = <int>hw_be32(r.p + 1); r.p += 5
    elif t == 0xD3:
        need(r, 9); out[0] = <int64_t>hw_be64(r.p + 1); r.p += 9
    else:
        raise ValueError("an integer field holds another type")
    return 0


cdef inline int read_timestamp(Reader *r, int64_t *micros) except -1:
    """A MessagePack timestamp (extension -1) as microseconds since the epoch."""
    need(r, 1)
    cdef unsigned char t = r.p[0]
    cdef uint64_t both
    cdef int64_t seconds
    cdef uint32_t nanos
    if t == 0xD6:  # fixext 4: seconds
        need(r, 6)
        if <signed char>r.p[1] != -1:
            raise ValueError("an extension that is not a timestamp")
        seconds = hw_be32(r.p + 2)
        nanos = 0
        r.p += 6
    elif t == 0xD7:  # fixext 8: 30 bits of nanoseconds, 34 of seconds
        need(r, 10)
        if <signed char>r.p[1] != -1:
            raise ValueError("an extension that is not a timestamp")
        both = hw_be64(r.p + 2)
        nanos = <uint32_t>(both >> 34)
        seconds = <int64_t>(both & 0x3FFFFFFFFULL)
        r.p += 10
    elif t == 0xC7:  # ext 8 of 12 bytes: nanoseconds, then signed seconds
        need(r, 15)
        if r.p[1] != 12 or <signed char>r.p[2] != -1:
            raise ValueError("an extension that is not a timestamp")
        nanos = hw_be32(r.p + 3)
        seconds = <int64_t>hw_be64(r.p + 7)
        r.p += 15
    else:
        raise ValueError("a time field that is not a MessagePack timestamp")
    if nanos >= 1000000000 or nanos % 1000 != 0:
        raise ValueError("a timestamp finer than a microsecond")
    # datetime's range (years 1 to 9999): msgspec refuses the rest
    if seconds < -62135596800LL or seconds > 253402300799LL:
        raise ValueError("a timestamp outside the years 1 to 9999")
    micros[0] = seconds * 1000000LL + nanos // 1000
    return 0


cdef inline int skip_bytes(Reader *r, unsigned char t) except -1:
    """Step over a scalar that is not a fixint, nil or bool: its header and bytes."""
    cdef Py_ssize_t head, length
    if 0xA0 <= t <= 0xBF:
        head = 1; length = t & 0x1F
    elif t == 0xC4 or t == 0xD9:  # bin 8, str 8
        need(r, 2); head = 2; length = r.p[1]
    elif t == 0xC5 or t == 0xDA:  # bin 16, str 16
        need(r, 3); head = 3; length = hw_be16(r.p + 1)
    elif t == 0xC6 or t == 0xDB:  # bin 32, str 32
        need(r, 5); head = 5; length = hw_be32(r.p + 1)
    elif t == 0xC7:  # ext 8
        need(r, 3); head = 3; length = r.p[1]
    elif t == 0xC8:  # ext 16
        need(r, 4); head = 4; length = hw_be16(r.p + 1)
    elif t == 0xC9:  # ext 32
        need(r, 6); head = 6; length = hw_be32(r.p + 1)
    elif t == 0xCA:  # float 32
        head = 1; length = 4
    elif t == 0xCB:  # float 64
        head = 1; length = 8
    elif 0xCC <= t <= 0xCF:  # uint 8..64
        head = 1; length = 1 << (t - 0xCC)
    elif 0xD0 <= t <= 0xD3:  # int 8..64
        head = 1; length = 1 << (t - 0xD0)
    elif 0xD4 <= t <= 0xD8:  # fixext 1..16
        head = 2; length = 1 << (t - 0xD4)
    else:  # 0xC1: never used
        raise ValueError("a MessagePack type that does not exist")
    need(r, head + length)
    r.p += head + length
    return 0


cdef inline int skip_value(Reader *r, int depth) except -1:
    """Step over one value of any type, nested values included."""
    need(r, 1)
    cdef unsigned char t = r.p[0]
    cdef Py_ssize_t n = 0, i
    if depth > 64:
        raise ValueError("a value nested deeper than 64")
    if t <= 0x7F or t >= 0xE0 or t == 0xC0 or t == 0xC2 or t == 0xC3:
        r.p += 1
        return 0
    if 0x90 <= t <= 0x9F or t == 0xDC or t == 0xDD:
        n = read_array(r)
        for i in range(n):
            skip_value(r, depth + 1)
        return 0
    if 0x80 <= t <= 0x8F or t == 0xDE or t == 0xDF:
        n = read_map(r)
        for i in range(2 * n):
            skip_value(r, depth + 1)
        return 0
    return skip_bytes(r, t)


cdef struct Span:
    # A string field's bytes inside a record, and whether the record has it.
    const char *p
    Py_ssize_t n
    bint present


cdef inline bint named(const char *key, Py_ssize_t n, const char *name, Py_ssize_t m) noexcept:
    return n == m and memcmp(key, name, m) == 0


cdef inline uint64_t fnv1a(const char *p, Py_ssize_t n) noexcept:
    """FNV-1a of ``p[:n]``: the readers' hash of ids found by their bytes."""
    cdef uint64_t h = 14695981039346656037ULL
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ <unsigned char>p[i]) * 1099511628211ULL
    return h

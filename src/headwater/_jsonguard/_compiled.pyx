# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The guard compiled to C: one pass over the bytes, no Python object per key.

It runs the machine of ``_python.py`` byte by byte (a property test holds the two to
the same messages): string content is skipped 16 or 8 bytes at a time, a stack of open
containers keeps each object's keys as spans of the input (escaped keys are decoded
into a scratch arena, so that ``"a"`` and ``"\\u0061"`` compare equal), small objects
compare a new key with each earlier one, and objects past ``_LINEAR_KEYS`` keys switch
to a hash table keyed per process (SipHash-1-3, as CPython hashes str), so that no
crafted set of keys makes the check quadratic.
"""

from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memset

import os

from headwater._jsonguard._messages import (
    DEFAULT_MAX_DEPTH,
    JsonShape,
    MAX_DEPTH_LIMIT,
    check_max_depth,
    decode_key,
    duplicate_key,
    not_json,
    too_deep,
)

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__SSE2__) || defined(_M_X64)
    #include <emmintrin.h>
    #endif

    /* The first byte at or after p that ends plain string content: a quote, a
       backslash, a control character or the start of a multi-byte UTF-8 sequence. */
    static inline const unsigned char *hw_plain_end(const unsigned char *p,
                                                    const unsigned char *end) {
    #if defined(__SSE2__) || defined(_M_X64)
        const __m128i quote = _mm_set1_epi8('"');
        const __m128i backslash = _mm_set1_epi8('\\\\');
        const __m128i space = _mm_set1_epi8(0x20);
        while (end - p >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)p);
            /* signed: bytes >= 0x80 are negative, so one compare finds both controls
               and non-ASCII */
            __m128i hit = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                _mm_cmplt_epi8(v, space));
            int mask = _mm_movemask_epi8(hit);
            if (mask) {
    #if defined(__GNUC__) || defined(__clang__)
                return p + __builtin_ctz((unsigned)mask);
    #else
                while (!(mask & 1)) { mask >>= 1; p++; }
                return p;
    #endif
            }
            p += 16;
        }
    #elif (defined(__GNUC__) || defined(__clang__)) && defined(__BYTE_ORDER__) \\
        && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        while (end - p >= 8) {
            uint64_t v, q, b, m;
            memcpy(&v, p, 8);
            q = v ^ (ones * '"');
            b = v ^ (ones * '\\\\');
            /* the lowest flagged byte is always a true hit: borrows only run upwards */
            m = (((q - ones) & ~q) | ((b - ones) & ~b) | (v - ones * 0x20) | v) & highs;
            if (m) return p + (__builtin_ctzll(m) >> 3);
            p += 8;
        }
    #endif
        while (p < end && *p != '"' && *p != '\\\\' && *p >= 0x20 && *p < 0x80) p++;
        return p;
    }

    /* The first 8 bytes of a key, zero-padded; one load where 8 bytes are readable. */
    static inline uint64_t hw_head(const unsigned char *p, Py_ssize_t n,
                                   const unsigned char *limit) {
        uint64_t v = 0;
        if (n >= 8) {
            memcpy(&v, p, 8);
            return v;
        }
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (limit - p >= 8) {
            memcpy(&v, p, 8);
            return v & ((1ULL << (8 * n)) - 1);
        }
    #endif
        for (Py_ssize_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
        return v;
    }

    /* SipHash-1-3 (CPython's str hash), keyed per process. */
    #define HW_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
    #define HW_ROUND \\
        v0 += v1; v1 = HW_ROTL(v1, 13); v1 ^= v0; v0 = HW_ROTL(v0, 32); \\
        v2 += v3; v3 = HW_ROTL(v3, 16); v3 ^= v2; \\
        v0 += v3; v3 = HW_ROTL(v3, 21); v3 ^= v0; \\
        v2 += v1; v1 = HW_ROTL(v1, 17); v1 ^= v2; v2 = HW_ROTL(v2, 32);
    static uint64_t hw_siphash13(uint64_t k0, uint64_t k1, const unsigned char *p,
                                 size_t n) {
        uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
        uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
        uint64_t b = ((uint64_t)n) << 56, m;
        size_t i, left = n & 7;
        for (i = 0; i + 8 <= n; i += 8) {
            m = 0;
            for (int j = 0; j < 8; j++) m |= ((uint64_t)p[i + j]) << (8 * j);
            v3 ^= m; HW_ROUND v0 ^= m;
        }
        for (size_t j = 0; j < left; j++) b |= ((uint64_t)p[i + j]) << (8 * j);
        v3 ^= b; HW_ROUND v0 ^= b;
        v2 ^= 0xff;
        HW_ROUND HW_ROUND HW_ROUND
        return v0 ^ v1 ^ v2 ^ v3;
    }
    """
    const unsigned char *hw_plain_end(const unsigned char *p, const unsigned char *end) nogil
    uint64_t hw_siphash13(uint64_t k0, uint64_t k1, const unsigned char *p, size_t n) nogil
    uint64_t hw_head(const unsigned char *p, Py_ssize_t n, const unsigned char *limit) nogil

ctypedef const unsigned char cuchar

cdef uint64_t _K0, _K1
_K0 = int.from_bytes(os.urandom(8), "little")
_K1 = int.from_bytes(os.urandom(8), "little")

cdef enum:
    # An object compares a new key with each earlier one up to this many keys, then hashes.
    _LINEAR_KEYS = 16
    _INLINE_KEYS = 64  # key entries before the first malloc: deeper than real events need
    _DEPTH_SLOTS = 256  # one frame per open container, up to MAX_DEPTH_LIMIT

if MAX_DEPTH_LIMIT > _DEPTH_SLOTS:
    raise ImportError("_compiled.pyx holds fewer frames than MAX_DEPTH_LIMIT allows")

# Reasons, as in _messages.
cdef enum:
    R_EOF = 0
    R_CHARACTER = 1
    R_NUMBER = 2
    R_STRING = 3
    R_UTF8 = 4

# What a scan found.
cdef enum:
    OK = 0
    SYNTAX = 1
    DUPLICATE = 2
    TOO_DEEP = 3
    NO_MEMORY = 4


ctypedef struct Key:
    Py_ssize_t off   # >= 0: offset of the key's content in the input; < 0: ~offset in the arena
    Py_ssize_t size
    uint64_t head    # the first 8 bytes, zero-padded: most pairs of keys differ there or in size
    uint64_t hash


ctypedef struct Frame:
    bint is_object
    Py_ssize_t count      # elements or members before the current one
    Py_ssize_t key_off    # the current member's key, raw, for the path of a refusal
    Py_ssize_t key_size
    Py_ssize_t keys_base  # this object's first entry in Scan.keys
    Py_ssize_t arena_base
    Py_ssize_t table_base  # this object's slots in Scan.table, or -1 while it compares linearly
    Py_ssize_t table_mask


ctypedef struct Scan:
    cuchar *data
    cuchar *limit  # the end of the input
    Py_ssize_t depth
    Frame frames[_DEPTH_SLOTS]
    Key *keys
    Py_ssize_t keys_top, keys_cap
    Key inline_keys[_INLINE_KEYS]
    unsigned char *arena
    Py_ssize_t arena_top, arena_cap
    Py_ssize_t *table   # 0 is empty; otherwise 1 + the key's index from keys_base
    Py_ssize_t table_top, table_cap
    int reason
    Py_ssize_t error_at
    # The shape of a top-level array: its elements, the longest's bytes, where the
    # current one started.
    Py_ssize_t elements, longest, element_at


cdef inline bint _is_ws(unsigned char c) noexcept nogil:
    return c == 0x20 or c == 0x0A or c == 0x0D or c == 0x09


cdef inline Py_ssize_t _skip_ws(cuchar *s, Py_ssize_t i, Py_ssize_t end) noexcept nogil:
    while i < end and _is_ws(s[i]):
        i += 1
    return i


cdef inline bint _is_digit(unsigned char c) noexcept nogil:
    return 0x30 <= c <= 0x39


cdef inline int _hex(unsigned char c) noexcept nogil:
    if 0x30 <= c <= 0x39:
        return c - 0x30
    c |= 0x20
    if 0x61 <= c <= 0x66:
        return c - 0x61 + 10
    return -1


cdef inline int _hex4(cuchar *s, Py_ssize_t i) noexcept nogil:
    """The code unit of four hex digits at ``i``, or -1."""
    cdef int a = _hex(s[i]), b = _hex(s[i + 1]), c = _hex(s[i + 2]), d = _hex(s[i + 3])
    if a < 0 or b < 0 or c < 0 or d < 0:
        return -1
    return (a << 12) | (b << 8) | (c << 4) | d


cdef inline Py_ssize_t _fail(Scan *sc, int reason, Py_ssize_t at) noexcept nogil:
    sc.reason = reason
    sc.error_at = at
    return -1


cdef inline Py_ssize_t _utf8(cuchar *s, Py_ssize_t i, Py_ssize_t end) noexcept nogil:
    """The index after the well-formed UTF-8 sequence that starts at ``i``, or -1."""
    cdef unsigned char c = s[i], lo = 0x80, hi = 0xBF
    cdef Py_ssize_t n, k
    if 0xC2 <= c <= 0xDF:
        n = 1
    elif 0xE0 <= c <= 0xEF:
        n = 2
        if c == 0xE0:
            lo = 0xA0  # no overlong forms
        elif c == 0xED:
            hi = 0x9F  # no surrogates
    elif 0xF0 <= c <= 0xF4:
        n = 3
        if c == 0xF0:
            lo = 0x90
        elif c == 0xF4:
            hi = 0x8F  # nothing past U+10FFFF
    else:
        return -1
    if end - i <= n or not lo <= s[i + 1] <= hi:
        return -1
    for k in range(2, n + 1):
        if s[i + k] & 0xC0 != 0x80:
            return -1
    return i + n + 1


cdef inline Py_ssize_t _escape(Scan *sc, cuchar *s, Py_ssize_t i, Py_ssize_t end) noexcept nogil:
    """The index after the escape whose backslash is at ``i``, or -1."""
    cdef unsigned char e
    cdef int unit, low
    if end - i < 2:
        return _fail(sc, R_STRING, i)
    e = s[i + 1]
    if e == 0x75:  # u
        if end - i < 6:
            return _fail(sc, R_STRING, i)
        unit = _hex4(s, i + 2)
        if unit < 0 or 0xDC00 <= unit <= 0xDFFF:
            return _fail(sc, R_STRING, i)
        if 0xD800 <= unit <= 0xDBFF:
            # A high surrogate is valid only with its low half right after it.
            if end - i < 12 or s[i + 6] != 0x5C or s[i + 7] != 0x75:
                return _fail(sc, R_STRING, i)
            low = _hex4(s, i + 8)
            if not 0xDC00 <= low <= 0xDFFF:
                return _fail(sc, R_STRING, i)
            return i + 12
        return i + 6
    if (
        e == 0x22 or e == 0x5C or e == 0x2F or e == 0x62
        or e == 0x66 or e == 0x6E or e == 0x72 or e == 0x74
    ):
        return i + 2
    return _fail(sc, R_STRING, i)


cdef inline Py_ssize_t _string(
    Scan *sc, cuchar *s, Py_ssize_t i, Py_ssize_t end, bint *escaped
) noexcept nogil:
    """The index after the string whose content starts at ``i``, or -1."""
    cdef unsigned char c
    cdef Py_ssize_t j
    while True:
        i = hw_plain_end(s + i, s + end) - s
        if i >= end:
            return _fail(sc, R_EOF, end)
        c = s[i]
        if c == 0x22:
            return i + 1
        if c == 0x5C:
            escaped[0] = True
            i = _escape(sc, s, i, end)
            if i < 0:
                return -1
        elif c < 0x20:
            return _fail(sc, R_STRING, i)
        else:
            j = _utf8(s, i, end)
            if j < 0:
                return _fail(sc, R_UTF8, i)
            i = j


cdef inline Py_ssize_t _digits(Scan *sc, cuchar *s, Py_ssize_t i, Py_ssize_t end) noexcept nogil:
    if i >= end or not _is_digit(s[i]):
        return _fail(sc, R_NUMBER, i)
    i += 1
    while i < end and _is_digit(s[i]):
        i += 1
    return i


cdef inline Py_ssize_t _number(Scan *sc, cuchar *s, Py_ssize_t i, Py_ssize_t end) noexcept nogil:
    """The index after ``-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?`` at ``i``, or -1."""
    if s[i] == 0x2D:
        i += 1
    if i < end and s[i] == 0x30:
        i += 1
    else:
        i = _digits(sc, s, i, end)
        if i < 0:
            return -1
    if i < end and s[i] == 0x2E:
        i = _digits(sc, s, i + 1, end)
        if i < 0:
            return -1
    if i < end and (s[i] | 0x20) == 0x65:
        i += 1
        if i < end and (s[i] == 0x2B or s[i] == 0x2D):
            i += 1
        i = _digits(sc, s, i, end)
    return i


cdef inline Py_ssize_t _literal(
    Scan *sc, cuchar *s, Py_ssize_t i, Py_ssize_t end, const char *word, Py_ssize_t n
) noexcept nogil:
    if end - i < n or memcmp(s + i, word, n) != 0:
        return _fail(sc, R_CHARACTER, i)
    return i + n


cdef inline cuchar *_key_bytes(Scan *sc, Py_ssize_t off) noexcept nogil:
    if off >= 0:
        return sc.data + off
    return sc.arena + ~off


cdef Py_ssize_t _decode_key(Scan *sc, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Decode the escaped key content ``data[a:b]`` (already validated) into the arena;
    its arena offset, or -1 without memory. The decoded form is never longer."""
    cdef cuchar *s = sc.data
    cdef unsigned char *out
    cdef Py_ssize_t start, n, i
    cdef unsigned char e
    cdef int cp
    if sc.arena_top + (b - a) > sc.arena_cap:
        n = max(2 * sc.arena_cap, sc.arena_top + (b - a), 256)
        out = <unsigned char *>realloc(sc.arena, n)
        if out == NULL:
            return -1
        sc.arena = out
        sc.arena_cap = n
    start = sc.arena_top
    out = sc.arena + start
    n = 0
    i = a
    while i < b:
        if s[i] != 0x5C:
            out[n] = s[i]
            n += 1
            i += 1
            continue
        e = s[i + 1]
        if e != 0x75:
            if e == 0x62:
                e = 0x08
            elif e == 0x66:
                e = 0x0C
            elif e == 0x6E:
                e = 0x0A
            elif e == 0x72:
                e = 0x0D
            elif e == 0x74:
                e = 0x09
            out[n] = e
            n += 1
            i += 2
            continue
        cp = _hex4(s, i + 2)
        i += 6
        if 0xD800 <= cp <= 0xDBFF:
            cp = 0x10000 + ((cp - 0xD800) << 10) + (_hex4(s, i + 2) - 0xDC00)
            i += 6
        if cp < 0x80:
            out[n] = <unsigned char>cp
            n += 1
        elif cp < 0x800:
            out[n] = <unsigned char>(0xC0 | (cp >> 6))
            out[n + 1] = <unsigned char>(0x80 | (cp & 0x3F))
            n += 2
        elif cp < 0x10000:
            out[n] = <unsigned char>(0xE0 | (cp >> 12))
            out[n + 1] = <unsigned char>(0x80 | ((cp >> 6) & 0x3F))
            out[n + 2] = <unsigned char>(0x80 | (cp & 0x3F))
            n += 3
        else:
            out[n] = <unsigned char>(0xF0 | (cp >> 18))
            out[n + 1] = <unsigned char>(0x80 | ((cp >> 12) & 0x3F))
            out[n + 2] = <unsigned char>(0x80 | ((cp >> 6) & 0x3F))
            out[n + 3] = <unsigned char>(0x80 | (cp & 0x3F))
            n += 4
    sc.arena_top = start + n
    return start


cdef bint _grow_keys(Scan *sc) noexcept nogil:
    cdef Py_ssize_t cap = 2 * sc.keys_cap
    cdef Key *keys
    if sc.keys == sc.inline_keys:
        keys = <Key *>malloc(cap * sizeof(Key))
        if keys != NULL:
            memcpy(keys, sc.keys, sc.keys_top * sizeof(Key))
    else:
        keys = <Key *>realloc(sc.keys, cap * sizeof(Key))
    if keys == NULL:
        return False
    sc.keys = keys
    sc.keys_cap = cap
    return True


cdef inline bint _same(Scan *sc, Key *a, Key *b) noexcept nogil:
    return (
        a.size == b.size
        and a.head == b.head
        and (
            a.size <= 8
            or memcmp(_key_bytes(sc, a.off) + 8, _key_bytes(sc, b.off) + 8, a.size - 8) == 0
        )
    )


cdef int _rehash(Scan *sc, Frame *f, Py_ssize_t slots) noexcept nogil:
    """Give object ``f`` a table of ``slots`` slots (a power of two) holding its keys.
    Its table, if any, is the last one: objects opened inside it have closed."""
    cdef Py_ssize_t base = f.table_base if f.table_base >= 0 else sc.table_top
    cdef Py_ssize_t *table
    cdef Py_ssize_t n, j, mask = slots - 1
    if base + slots > sc.table_cap:
        n = max(2 * sc.table_cap, base + slots)
        table = <Py_ssize_t *>realloc(sc.table, n * sizeof(Py_ssize_t))
        if table == NULL:
            return NO_MEMORY
        sc.table = table
        sc.table_cap = n
    memset(sc.table + base, 0, slots * sizeof(Py_ssize_t))
    f.table_base = base
    f.table_mask = mask
    sc.table_top = base + slots
    for n in range(sc.keys_top - f.keys_base):
        j = <Py_ssize_t>(sc.keys[f.keys_base + n].hash & <uint64_t>mask)
        while sc.table[base + j]:
            j = (j + 1) & mask
        sc.table[base + j] = n + 1
    return OK


cdef int _add_key(Scan *sc, Frame *f, Py_ssize_t off, Py_ssize_t size) noexcept nogil:
    """Record the key of object ``f``; DUPLICATE when it already has it."""
    cdef Key *key
    cdef Key *other
    cdef Py_ssize_t n = sc.keys_top - f.keys_base, j
    if sc.keys_top == sc.keys_cap and not _grow_keys(sc):
        return NO_MEMORY
    key = &sc.keys[sc.keys_top]
    key.off = off
    key.size = size
    if off >= 0:
        key.head = hw_head(sc.data + off, size, sc.limit)
    else:
        key.head = hw_head(sc.arena + ~off, size, sc.arena + sc.arena_cap)
    if f.table_base < 0:
        for j in range(f.keys_base, sc.keys_top):
            if _same(sc, &sc.keys[j], key):
                return DUPLICATE
        sc.keys_top += 1
        if n + 1 == _LINEAR_KEYS:
            for j in range(f.keys_base, sc.keys_top):
                other = &sc.keys[j]
                other.hash = hw_siphash13(_K0, _K1, _key_bytes(sc, other.off), other.size)
            return _rehash(sc, f, 4 * _LINEAR_KEYS)
        return OK
    key.hash = hw_siphash13(_K0, _K1, _key_bytes(sc, off), size)
    j = <Py_ssize_t>(key.hash & <uint64_t>f.table_mask)
    while sc.table[f.table_base + j]:
        other = &sc.keys[f.keys_base + sc.table[f.table_base + j] - 1]
        if other.hash == key.hash and _same(sc, other, key):
            return DUPLICATE
        j = (j + 1) & f.table_mask
    sc.table[f.table_base + j] = n + 1
    sc.keys_top += 1
    if 2 * (n + 1) > f.table_mask:  # keep the table at most half full
        return _rehash(sc, f, 2 * (f.table_mask + 1))
    return OK


cdef inline void _close(Scan *sc) noexcept nogil:
    cdef Frame *f
    sc.depth -= 1
    f = &sc.frames[sc.depth]
    if f.is_object:
        sc.keys_top = f.keys_base
        sc.arena_top = f.arena_base
        if f.table_base >= 0:
            sc.table_top = f.table_base


cdef enum:
    S_VALUE = 0
    S_AFTER = 1
    S_KEY = 2


cdef int _scan(Scan *sc, Py_ssize_t start, Py_ssize_t end, Py_ssize_t max_depth) noexcept nogil:
    """Scan the document ``data[start:end]``; OK, or what it found (details in ``sc``)."""
    cdef cuchar *s = sc.data
    cdef Py_ssize_t i = _skip_ws(s, start, end), a, off
    cdef int state = S_VALUE, found
    cdef unsigned char c
    cdef Frame *f
    cdef bint escaped
    sc.depth = 0
    sc.keys_top = 0
    sc.arena_top = 0
    sc.table_top = 0
    sc.elements = 0
    sc.longest = 0
    sc.element_at = 0
    while True:
        if state == S_VALUE:
            if i >= end:
                _fail(sc, R_EOF, i)
                return SYNTAX
            if sc.depth == 1 and not sc.frames[0].is_object:
                sc.element_at = i  # an element of a top-level array starts
            c = s[i]
            if c == 0x22:
                i = _string(sc, s, i + 1, end, &escaped)
                state = S_AFTER
            elif c == 0x7B or c == 0x5B:
                if sc.depth == max_depth:
                    return TOO_DEEP
                f = &sc.frames[sc.depth]
                sc.depth += 1
                f.is_object = c == 0x7B
                f.count = 0
                f.key_off = 0
                f.key_size = 0
                f.keys_base = sc.keys_top
                f.arena_base = sc.arena_top
                f.table_base = -1
                i = _skip_ws(s, i + 1, end)
                if i < end and s[i] == c + 2:  # '{' + 2 is '}', '[' + 2 is ']'
                    _close(sc)
                    i += 1
                    state = S_AFTER
                elif f.is_object:
                    state = S_KEY
                continue
            elif c == 0x2D or _is_digit(c):
                i = _number(sc, s, i, end)
                state = S_AFTER
            elif c == 0x74:
                i = _literal(sc, s, i, end, b"true", 4)
                state = S_AFTER
            elif c == 0x66:
                i = _literal(sc, s, i, end, b"false", 5)
                state = S_AFTER
            elif c == 0x6E:
                i = _literal(sc, s, i, end, b"null", 4)
                state = S_AFTER
            else:
                _fail(sc, R_CHARACTER, i)
                return SYNTAX
            if i < 0:
                return SYNTAX
        elif state == S_AFTER:
            if sc.depth == 1 and not sc.frames[0].is_object:
                sc.elements += 1  # and ends
                if i - sc.element_at > sc.longest:
                    sc.longest = i - sc.element_at
            i = _skip_ws(s, i, end)
            if sc.depth == 0:
                if i < end:
                    _fail(sc, R_CHARACTER, i)  # trailing characters
                    return SYNTAX
                return OK
            if i >= end:
                _fail(sc, R_EOF, i)
                return SYNTAX
            c = s[i]
            f = &sc.frames[sc.depth - 1]
            if c == 0x2C:
                f.count += 1
                i = _skip_ws(s, i + 1, end)
                state = S_KEY if f.is_object else S_VALUE
            elif c == (0x7D if f.is_object else 0x5D):
                _close(sc)
                i += 1
            else:
                _fail(sc, R_CHARACTER, i)
                return SYNTAX
        else:  # S_KEY
            if i >= end:
                _fail(sc, R_EOF, i)
                return SYNTAX
            if s[i] != 0x22:
                _fail(sc, R_CHARACTER, i)
                return SYNTAX
            a = i + 1
            escaped = False
            i = _string(sc, s, a, end, &escaped)
            if i < 0:
                return SYNTAX
            f = &sc.frames[sc.depth - 1]
            f.key_off = a
            f.key_size = i - 1 - a
            off = a
            if escaped:  # rare: compare the decoded key, so "\u0061" is "a"
                off = _decode_key(sc, a, i - 1)
                if off < 0:
                    return NO_MEMORY
                found = _add_key(sc, f, ~off, sc.arena_top - off)
            else:
                found = _add_key(sc, f, a, f.key_size)
            if found != OK:
                return found
            i = _skip_ws(s, i, end)
            if i >= end:
                _fail(sc, R_EOF, i)
                return SYNTAX
            if s[i] != 0x3A:
                _fail(sc, R_CHARACTER, i)
                return SYNTAX
            i = _skip_ws(s, i + 1, end)
            state = S_VALUE


cdef list _path(Scan *sc):
    """The path of the refusal: each open container's current element or member."""
    cdef list path = []
    cdef Frame *f
    cdef Py_ssize_t d
    for d in range(sc.depth):
        f = &sc.frames[d]
        if f.is_object:
            path.append(decode_key(sc.data[f.key_off : f.key_off + f.key_size]))
        else:
            path.append(f.count)
    return path


cdef inline void _open(Scan *sc, cuchar *data, Py_ssize_t size) noexcept nogil:
    sc.data = data
    sc.limit = data + size
    sc.keys = sc.inline_keys
    sc.keys_cap = _INLINE_KEYS
    sc.arena = NULL
    sc.arena_cap = 0
    sc.table = NULL
    sc.table_cap = 0


cdef inline void _release(Scan *sc) noexcept nogil:
    if sc.keys != sc.inline_keys:
        free(sc.keys)
    free(sc.arena)
    free(sc.table)


cdef object _refusal(Scan *sc, int found, Py_ssize_t start, Py_ssize_t max_depth, int line):
    if found == SYNTAX:
        return not_json(sc.reason, sc.error_at - start, line)
    if found == DUPLICATE:
        return duplicate_key(_path(sc), line)
    if found == TOO_DEEP:
        return too_deep(_path(sc), max_depth, line)
    return MemoryError()


def check_json(data, *, max_depth=DEFAULT_MAX_DEPTH):
    """Raise ``MalformedBatchError`` unless ``data`` is one JSON document whose objects
    never repeat a key and whose containers nest at most ``max_depth`` deep; its shape."""
    check_max_depth(max_depth)
    cdef const unsigned char[::1] view = data
    cdef Py_ssize_t depth = max_depth, n = view.shape[0]
    cdef Scan sc  # on the C stack: nothing to allocate for a typical batch
    cdef int found
    _open(&sc, &view[0] if n else <cuchar *>b"", n)
    try:
        found = _scan(&sc, 0, n, depth)
        if found != OK:
            raise _refusal(&sc, found, 0, depth, 0)
        return JsonShape(sc.elements, sc.longest)
    finally:
        _release(&sc)


def check_ndjson(data, *, max_depth=DEFAULT_MAX_DEPTH, allow_malformed_lines=False):
    """``check_json`` for each non-blank line of newline-delimited JSON (lines as
    ``bytes.splitlines`` cuts them); with ``allow_malformed_lines`` a line that is not
    JSON is passed over, for the decoder to reject that event alone."""
    check_max_depth(max_depth)
    cdef const unsigned char[::1] view = data
    cdef Py_ssize_t depth = max_depth, n = view.shape[0], a = 0, b, k
    cdef bint skip_malformed = allow_malformed_lines
    cdef cuchar *s
    cdef cuchar *hit
    cdef int found, line = 0
    cdef Scan sc
    if n == 0:
        return
    s = &view[0]
    _open(&sc, s, n)
    try:
        while a < n:
            line += 1
            # Lines end at \n, \r or \r\n, as bytes.splitlines cuts them (the
            # validator's split); neither can occur inside a valid JSON string.
            hit = <cuchar *>memchr(s + a, 0x0A, n - a)
            b = hit - s if hit != NULL else n
            hit = <cuchar *>memchr(s + a, 0x0D, b - a)
            if hit != NULL:
                b = hit - s
            k = a
            while k < b and (s[k] == 0x20 or s[k] == 0x09 or s[k] == 0x0B or s[k] == 0x0C):
                k += 1
            if k < b:  # not blank (blank as bytes.strip sees it)
                found = _scan(&sc, a, b, depth)
                if found != OK and not (found == SYNTAX and skip_malformed):
                    raise _refusal(&sc, found, a, depth, line)
            if b + 1 < n and s[b] == 0x0D and s[b + 1] == 0x0A:
                a = b + 2
            else:
                a = b + 1
    finally:
        _release(&sc)

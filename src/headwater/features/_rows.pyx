# distutils: language = c++
# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""A batch's stored rows through the feature pass in C: no Python object per value.

``RowPass.apply_rows`` does what ``_pass.FeaturePass.apply_rows`` does (each user's
stored row decoded, the user's events of the batch applied, the row encoded) without
building the row's lists, dicts, strings and integers. It reads the row's MessagePack
in place: the values of the features the user's events feed are parsed into C arrays
(strings stay pointers into the row's bytes or the batch's strings), the events are
applied to them as ``_pass.Walk`` and the ``_kinds`` updates do, and the row is written
back as MessagePack, as msgspec writes it (the same bytes ``_pass`` stores). The
values of features the events do not feed are copied through as bytes.

A row or an event it does not take (a value of a shape the kinds never write, bucket
maps of rows written before the bucket lists, a sum beyond 64 bits, text that is not
UTF-8, a payload msgspec refuses) leaves that user to ``_pass.FeaturePass``, which gives
its own answer; a batch msgspec read (no ``_records.Columns``) goes there whole. A
property test in tests holds this pass to that one, byte for byte.
"""

from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.string cimport memcmp, memcpy, memmove
from libcpp.vector cimport vector
from libcpp.unordered_set cimport unordered_set
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsLongLong
from cpython.unicode cimport PyUnicode_DecodeUTF8
from headwater.features._records cimport Columns, Fields
from headwater._msgpack cimport (
    Reader, fnv1a, hw_be32, hw_be64, hw_f32, hw_f64, is_nil, need, read_array, read_int,
    read_map, read_str, skip_value,
)

cdef extern from *:
    bint __builtin_add_overflow(int64_t a, int64_t b, int64_t *out) nogil

from typing import Any

import msgspec

from headwater.features._pass import FIRST, IDS, LATE, WATERMARK

#: As ``_pass`` has them (C constants there when it is compiled; a test compares).
RECENT_IDS = 32
SCAN_IDS = 48

_decode_payload = msgspec.msgpack.Decoder(dict[str, Any]).decode
_encode = msgspec.msgpack.Encoder().encode


class UnsupportedRowError(ValueError):
    """A row or event this pass leaves to ``_pass.FeaturePass``."""


cdef enum:
    COUNT = 1
    WINDOW = 2
    RECENT = 3
    LAST_EVENT = 4
    MEAN = 5
    LAST_TIME = 6
    SURFACES = 7
    # Roles of a row's keys that are not a feature's.
    R_OTHER = -1
    R_IDS = -2
    R_T = -3
    R_FIRST = -4
    R_LATE = -5
    MOST_TYPES = 10_000  # event types remembered (as ``_pass`` bounds its own)
    KEPT_TYPES = 64  # event types found by their bytes, before the others by text

cdef int64_t MINUTE_MS = 60_000
cdef int64_t HOUR_MS = 3_600_000
cdef int64_t MINUTES_KEPT = 61
cdef int64_t HOURS_KEPT = 24 * 7 + 1

CODES = {
    "Count": COUNT,
    "WindowCount": WINDOW,
    "RecentItems": RECENT,
    "LastEvent": LAST_EVENT,
    "Mean": MEAN,
    "LastTime": LAST_TIME,
    "ActiveSurfaces": SURFACES,
}


cdef struct Span:
    const char *p
    Py_ssize_t n


cdef struct KV:
    Span key
    int64_t n


cdef struct Buckets:
    Span key
    vector[int64_t] minutes
    vector[int64_t] hours


cdef struct State:
    # A feature's value while the user's events pass: parsed (from the row, or None
    # there) when an event type the user has in the batch feeds it, else copied through.
    bint parsed
    bint exists  # False: the value is None (the row has no such key yet)
    vector[KV] kv  # count, active_surfaces
    vector[Buckets] buckets  # window_count
    vector[Span] items  # recent_items
    vector[int64_t] times  # recent_items
    int64_t ts  # last_event, last_time
    Span item  # last_event (p NULL: None)
    Span fields  # last_event: the chosen payload fields, a MessagePack map
    bint is_float  # mean
    int64_t isum
    double fsum
    int64_t count


cdef struct Entry:
    Span key
    Span value
    int role  # a feature's slot, or R_*


cdef inline bint same(Span a, Span b) noexcept:
    return a.n == b.n and memcmp(a.p, b.p, a.n) == 0


cdef inline int64_t floor_div(int64_t a, int64_t b) noexcept:
    return a // b  # cdivision is off: floors, as Python does


cdef inline uint64_t fnv(Span s) noexcept:
    return fnv1a(s.p, s.n)


# -- reading a row ----------------------------------------------------------------------

cdef int read_number(Reader *r, int64_t *i, double *d, bint *is_float) except -1:
    need(r, 1)
    cdef unsigned char t = r.p[0]
    if t == 0xCB:
        need(r, 9); d[0] = hw_f64(hw_be64(r.p + 1)); r.p += 9; is_float[0] = True
    elif t == 0xCA:
        need(r, 5); d[0] = hw_f32(hw_be32(r.p + 1)); r.p += 5; is_float[0] = True
    else:
        read_int(r, i)
        is_float[0] = False
    return 0


cdef inline Span read_text(Reader *r) except *:
    cdef Span s
    read_str(r, &s.p, &s.n)
    return s


cdef int read_kv(Reader *r, vector[KV] *out) except -1:
    """A map of text to integers (count, active_surfaces)."""
    cdef Py_ssize_t n = read_map(r), i
    cdef KV kv
    for i in range(n):
        kv.key = read_text(r)
        read_int(r, &kv.n)
        out.push_back(kv)
    return 0


cdef int read_ints(Reader *r, vector[int64_t] *out) except -1:
    """An array of integers (a map here: bucket maps, a row written before the lists)."""
    cdef Py_ssize_t n = read_array(r), i
    cdef int64_t v
    out.reserve(n + 4)
    for i in range(n):
        read_int(r, &v)
        out.push_back(v)
    return 0


cdef int read_state(int code, const unsigned char *p, Py_ssize_t size, State *s) except -1:
    """A feature's stored value into ``s`` (a value of another shape: UnsupportedRowError)."""
    cdef Reader r
    r.p = p
    r.end = p + size
    cdef Py_ssize_t n, i
    cdef Buckets *b
    cdef int64_t v
    if code == COUNT or code == SURFACES:
        read_kv(&r, &s.kv)
    elif code == WINDOW:
        n = read_map(&r)
        s.buckets.resize(n)
        for i in range(n):
            b = &s.buckets[i]
            b.key = read_text(&r)
            if read_array(&r) != 2:
                raise UnsupportedRowError("a bucket pair of another length")
            read_ints(&r, &b.minutes)
            read_ints(&r, &b.hours)
    elif code == RECENT:
        if read_array(&r) != 2:
            raise UnsupportedRowError("recent items of another shape")
        n = read_array(&r)
        for i in range(n):
            s.items.push_back(read_text(&r))
        if read_array(&r) != n:
            raise UnsupportedRowError("recent items and their times differ in length")
        for i in range(n):
            read_int(&r, &v)
            s.times.push_back(v)
    elif code == LAST_EVENT:
        if read_array(&r) != 3:
            raise UnsupportedRowError("a last event of another shape")
        read_int(&r, &s.ts)
        if is_nil(&r):
            s.item.p = NULL
            s.item.n = 0
        else:
            s.item = read_text(&r)
        s.fields.p = <const char *>r.p
        read_map(&r)
        r.p = <const unsigned char *>s.fields.p
        skip_value(&r, 0)
        s.fields.n = <const char *>r.p - s.fields.p
    elif code == MEAN:
        if read_array(&r) != 2:
            raise UnsupportedRowError("a mean of another shape")
        read_number(&r, &s.isum, &s.fsum, &s.is_float)
        read_int(&r, &s.count)
    elif code == LAST_TIME:
        read_int(&r, &s.ts)
    if r.p != r.end:
        raise UnsupportedRowError("bytes after a value")
    return 0


# -- writing a row, as msgspec writes it ---------------------------------------------------

cdef inline void w_raw(vector[char] *o, const char *p, Py_ssize_t n) noexcept:
    cdef size_t at = o.size()
    o.resize(at + n)
    memcpy(o.data() + at, p, n)


cdef inline void w_byte(vector[char] *o, unsigned char b) noexcept:
    o.push_back(<char>b)


cdef inline void w_be(vector[char] *o, unsigned char tag, uint64_t v, int width) noexcept:
    cdef size_t at = o.size()
    cdef int k
    o.resize(at + 1 + width)
    cdef char *d = o.data() + at
    d[0] = <char>tag
    for k in range(width):
        d[width - k] = <char>(v & 0xFF)
        v >>= 8


cdef void w_int(vector[char] *o, int64_t v) noexcept:
    if v >= 0:
        if v < 128:
            w_byte(o, <unsigned char>v)
        elif v < 0x100:
            w_be(o, 0xCC, <uint64_t>v, 1)
        elif v < 0x10000:
            w_be(o, 0xCD, <uint64_t>v, 2)
        elif v < 0x100000000LL:
            w_be(o, 0xCE, <uint64_t>v, 4)
        else:
            w_be(o, 0xCF, <uint64_t>v, 8)
    elif v >= -32:
        w_byte(o, <unsigned char>(<signed char>v))
    elif v >= -128:
        w_be(o, 0xD0, <uint64_t>v, 1)
    elif v >= -32768:
        w_be(o, 0xD1, <uint64_t>v, 2)
    elif v >= -2147483648LL:
        w_be(o, 0xD2, <uint64_t>v, 4)
    else:
        w_be(o, 0xD3, <uint64_t>v, 8)


cdef void w_float(vector[char] *o, double d) noexcept:
    cdef uint64_t bits
    memcpy(&bits, &d, 8)
    w_be(o, 0xCB, bits, 8)


cdef void w_str(vector[char] *o, Span s) noexcept:
    if s.n < 32:
        w_byte(o, 0xA0 | <unsigned char>s.n)
    elif s.n < 0x100:
        w_be(o, 0xD9, <uint64_t>s.n, 1)
    elif s.n < 0x10000:
        w_be(o, 0xDA, <uint64_t>s.n, 2)
    else:
        w_be(o, 0xDB, <uint64_t>s.n, 4)
    w_raw(o, s.p, s.n)


cdef void w_head(vector[char] *o, size_t n, unsigned char fix, unsigned char tag) noexcept:
    """An array's or a map's header: ``fix`` | n below 16, else ``tag`` (16 bits) or the
    tag after it (32 bits)."""
    if n < 16:
        w_byte(o, fix | <unsigned char>n)
    elif n < 0x10000:
        w_be(o, tag, n, 2)
    else:
        w_be(o, tag + 1, n, 4)


cdef inline void w_array(vector[char] *o, size_t n) noexcept:
    w_head(o, n, 0x90, 0xDC)


cdef inline void w_map(vector[char] *o, size_t n) noexcept:
    w_head(o, n, 0x80, 0xDE)


cdef void w_ints(vector[char] *o, vector[int64_t] *values) noexcept:
    cdef size_t i
    w_array(o, values.size())
    for i in range(values.size()):
        w_int(o, values[0][i])


cdef void w_state(vector[char] *o, int code, State *s) noexcept:
    cdef size_t i
    cdef Buckets *b
    if code == COUNT or code == SURFACES:
        w_map(o, s.kv.size())
        for i in range(s.kv.size()):
            w_str(o, s.kv[i].key)
            w_int(o, s.kv[i].n)
    elif code == WINDOW:
        w_map(o, s.buckets.size())
        for i in range(s.buckets.size()):
            b = &s.buckets[i]
            w_str(o, b.key)
            w_array(o, 2)
            w_ints(o, &b.minutes)
            w_ints(o, &b.hours)
    elif code == RECENT:
        w_array(o, 2)
        w_array(o, s.items.size())
        for i in range(s.items.size()):
            w_str(o, s.items[i])
        w_ints(o, &s.times)
    elif code == LAST_EVENT:
        w_array(o, 3)
        w_int(o, s.ts)
        if s.item.p == NULL:
            w_byte(o, 0xC0)
        else:
            w_str(o, s.item)
        w_raw(o, s.fields.p, s.fields.n)
    elif code == MEAN:
        w_array(o, 2)
        if s.is_float:
            w_float(o, s.fsum)
        else:
            w_int(o, s.isum)
        w_int(o, s.count)
    elif code == LAST_TIME:
        w_int(o, s.ts)


# -- the kinds' updates (``_kinds``), on the parsed values ---------------------------------

cdef void insert2(vector[int64_t] *b, size_t i, int64_t x, int64_t y) noexcept:
    cdef size_t n = b.size()
    b.resize(n + 2)
    cdef int64_t *d = b.data()
    memmove(d + i + 2, d + i, (n - i) * sizeof(int64_t))
    d[i] = x
    d[i + 1] = y


cdef void bump(vector[int64_t] *b, int64_t key, int64_t kept) noexcept:
    """``_kinds.bump``."""
    cdef size_t n = b.size(), i
    cdef int64_t *d
    cdef int64_t newest, at, older
    cdef bint placed = False
    if n == 0:
        b.push_back(key)
        b.push_back(1)
        return
    d = b.data()
    newest = d[0]
    if key == newest:
        d[1] += 1
        return
    if key > newest:
        d[0] = key - newest
        insert2(b, 0, key, 1)
    else:
        at = newest
        i = 2
        while i < n:
            older = at - d[i]
            if older == key:
                d[i + 1] += 1
                return
            if older < key:
                d[i] = key - older
                insert2(b, i, at - key, 1)
                placed = True
                break
            at = older
            i += 2
        if not placed:
            b.push_back(at - key)
            b.push_back(1)
    if b.size() > <size_t>(4 * kept):
        d = b.data()
        newest = d[0]
        at = newest
        i = 2
        while i < b.size():
            at -= d[i]
            if at <= newest - kept:
                b.resize(i)
                break
            i += 2


cdef KV *find_kv(vector[KV] *kv, Span key) noexcept:
    cdef size_t i
    for i in range(kv.size()):
        if same(kv[0][i].key, key):
            return &kv[0][i]
    return NULL


cdef class RowPass:
    """The pass over a batch's stored rows for one set of kinds (``_pass.FeaturePass``);
    built by :func:`row_pass`, which returns None for kinds this module does not know."""

    cdef object features  # the ``_pass.FeaturePass``: the users this one leaves
    cdef Py_ssize_t nkinds
    cdef vector[int] codes
    cdef vector[Py_ssize_t] sizes
    cdef vector[bint] removing
    cdef vector[Span] names
    cdef list name_bytes, remove_keys, remove_values, fields, field, book_bytes
    cdef Span book[6]  # _ids, _t, _first, _late at -R_IDS ... -R_LATE
    cdef dict type_index  # event type -> index into the vectors below
    cdef vector[vector[int]] fed_on_time
    cdef vector[vector[int]] fed_late
    cdef vector[uint64_t] masks
    cdef vector[bint] payload_read
    # Scratch, reused by every user.
    cdef vector[State] states
    cdef vector[Entry] entries
    cdef vector[int] added
    cdef vector[Span] ids
    cdef vector[Py_ssize_t] event_types  # of the user's events, indices (``type_of``)
    # The batch being applied, as the reader left it.
    cdef bint busy
    cdef object batch
    cdef Columns columns
    # Event types by their bytes (the first ``KEPT_TYPES``), for ``columns``.
    cdef vector[Span] type_bytes
    cdef vector[Py_ssize_t] type_indices
    cdef list type_texts
    cdef unordered_set[uint64_t] id_hashes
    cdef vector[char] out

    def __init__(self, features, list codes):
        self.features = features
        self.nkinds = len(codes)
        self.name_bytes = []
        self.remove_keys = []
        self.remove_values = []
        self.fields = []
        self.field = []
        self.type_index = {}
        self.type_texts = []
        cdef Span s
        cdef int c
        cdef Py_ssize_t size
        cdef bint removing
        for kind, code in zip(features.kinds, codes):
            c = code
            self.codes.push_back(c)
            name = kind.name.encode()
            self.name_bytes.append(name)
            s.p = PyBytes_AS_STRING(name)
            s.n = PyBytes_GET_SIZE(name)
            self.names.push_back(s)
            size = kind.size if c == RECENT else 0
            self.sizes.push_back(size)
            removing = c == RECENT and len(kind.remove_keys) > 0
            self.removing.push_back(removing)
            self.remove_keys.append(kind.remove_keys if code == RECENT else ())
            self.remove_values.append(kind.remove_values if code == RECENT else ())
            self.fields.append(kind.fields if code == LAST_EVENT else ())
            self.field.append(kind.field if code == MEAN else None)
        self.states.resize(self.nkinds)
        # The bookkeeping keys (``_pass``'s names), by -role.
        self.book_bytes = [None, None]
        for key in (IDS, WATERMARK, FIRST, LATE):
            name = key.encode()
            self.book_bytes.append(name)
            s.p = PyBytes_AS_STRING(name)
            s.n = PyBytes_GET_SIZE(name)
            self.book[len(self.book_bytes) - 1] = s

    cdef Py_ssize_t type_of(self, object etype) except -1:
        """The index of an event type's kinds (what it feeds on time and late)."""
        found = self.type_index.get(etype)
        if found is not None:
            return <Py_ssize_t>found
        if len(self.type_index) >= MOST_TYPES:
            raise UnsupportedRowError("more event types than are remembered")
        on_time, late = self.features.fed_by(etype)
        cdef vector[int] a, b
        cdef uint64_t mask = 0
        cdef bint reads = False
        for kind in on_time:
            a.push_back(kind.slot)
            mask |= (<uint64_t>1) << kind.slot
            code = self.codes[kind.slot]
            if code == LAST_EVENT or code == MEAN or self.removing[kind.slot]:
                reads = True
        for kind in late:
            b.push_back(kind.slot)
        index = len(self.type_index)
        self.fed_on_time.push_back(a)
        self.fed_late.push_back(b)
        self.masks.push_back(mask)
        self.payload_read.push_back(reads)
        self.type_index[etype] = index
        return index

    cdef Py_ssize_t type_of_text(self, const char *p, Py_ssize_t n) except -1:
        """``type_of`` an event type's UTF-8 bytes (valid: the reader checked them); the
    first ``KEPT_TYPES`` found by their bytes, without a string."""
        cdef size_t i
        cdef Span s
        for i in range(self.type_bytes.size()):
            if self.type_bytes[i].n == n and memcmp(self.type_bytes[i].p, p, n) == 0:
                return self.type_indices[i]
        etype = PyUnicode_DecodeUTF8(p, n, NULL)
        index = self.type_of(etype)
        if self.type_bytes.size() < KEPT_TYPES:
            kept = etype.encode()
            self.type_texts.append(kept)
            s.p = PyBytes_AS_STRING(kept)
            s.n = PyBytes_GET_SIZE(kept)
            self.type_bytes.push_back(s)
            self.type_indices.push_back(index)
        return index

    def apply_rows(self, batch, rows, codec, long long bound, dict out):
        """``_pass.FeaturePass.apply_rows``: the same rows in ``out``, the same counts."""
        cdef list users = batch.users
        cdef list starts = batch.starts
        cdef long long counts[3]
        decode, encode = codec
        raw = getattr(batch, "raw", None)
        # This pass reads a batch as the compiled reader left it; one msgspec read, and
        # a call made while this pass runs (its scratch is one batch's), go to _pass.
        if self.busy or type(raw) is not Columns:
            return self.features.apply_rows(batch, rows, codec, bound, out)
        self.busy = True
        try:
            self.batch = batch
            self.columns = raw
            self.walk_users(users, starts, rows, decode, encode, bound, out, counts)
        finally:
            self.busy = False
            self.batch = self.columns = None
        return counts[0], counts[1], counts[2]

    cdef int walk_users(self, list users, list starts, object rows, object decode,
                        object encode, long long bound, dict out, long long *totals) except -1:
        cdef Py_ssize_t k, start, stop
        cdef long long counts[3]
        cdef long long applied = 0, duplicates = 0, late = 0
        for k in range(len(users)):
            user = users[k]
            start = starts[k]
            stop = starts[k + 1]
            data = rows.get(user)
            try:
                out[user] = self.user_row(data, start, stop, bound, counts)
            except (ValueError, OverflowError):  # UnsupportedRowError, a reader's, text not UTF-8
                state = decode(data)
                got = self.features.apply_batch(state, self.batch, start, stop, bound)
                out[user] = encode(state)
                counts[0], counts[1], counts[2] = got
            applied += counts[0]
            duplicates += counts[1]
            late += counts[2]
        totals[0] = applied
        totals[1] = duplicates
        totals[2] = late
        return 0

    cdef bytes user_row(self, object data, Py_ssize_t start, Py_ssize_t stop,
                        long long bound, long long *counts):
        cdef Columns columns = self.columns
        cdef Fields *f
        cdef Py_ssize_t i, j, slot, t
        cdef uint64_t mask = 0
        cdef State *s
        cdef Entry e
        cdef Reader r
        cdef const unsigned char *row
        cdef Py_ssize_t row_n = 0
        cdef int64_t watermark = 0, first = 0, late_before = 0
        cdef unsigned int held = 0  # the bookkeeping keys the row has: bit -role
        cdef bint repeated
        if data is not None and type(data) is not bytes:
            raise UnsupportedRowError("a stored row that is not bytes")
        self.entries.clear()
        self.added.clear()
        self.ids.clear()
        if not self.id_hashes.empty():  # clear() wipes every bucket, used or not
            self.id_hashes.clear()
        # Which features this user's events feed.
        self.event_types.clear()
        for i in range(start, stop):
            f = &columns.fields[columns.order[i]]
            t = self.type_of_text(f.event_type.p, f.event_type.n)
            self.event_types.push_back(t)
            mask |= self.masks[t]
        for slot in range(self.nkinds):
            s = &self.states[slot]
            s.parsed = (mask >> slot) & 1
            s.exists = False
            s.kv.clear()
            s.buckets.clear()
            s.items.clear()
            s.times.clear()
            s.ts = 0
            s.item.p = NULL
            s.item.n = 0
            s.fields.p = NULL
            s.fields.n = 0
            s.is_float = False
            s.isum = 0
            s.fsum = 0.0
            s.count = 0
        # The stored row: its keys in order, the values of the fed features parsed.
        if data:
            row = <const unsigned char *>PyBytes_AS_STRING(data)
            row_n = PyBytes_GET_SIZE(data)
            r.p = row
            r.end = row + row_n
            for i in range(read_map(&r)):
                e.key = read_text(&r)
                e.value.p = <const char *>r.p
                skip_value(&r, 0)
                e.value.n = <const char *>r.p - e.value.p
                e.role = self.role_of(e.key)
                # msgspec keeps one value of a key given twice: _pass answers that row.
                if e.role >= 0:
                    repeated = self.states[e.role].exists
                elif e.role == R_OTHER:
                    repeated = self.repeated(e.key)
                else:
                    repeated = held & (1u << -e.role)
                    held |= 1u << -e.role
                if repeated:
                    raise UnsupportedRowError("a row that repeats a key")
                if e.role >= 0:
                    s = &self.states[e.role]
                    s.exists = True
                    if s.parsed:
                        read_state(self.codes[e.role], <const unsigned char *>e.value.p,
                                   e.value.n, s)
                elif e.role == R_IDS:
                    self.read_ids(e.value)
                elif e.role == R_T:
                    watermark = self.read_one(e.value)
                elif e.role == R_FIRST:
                    first = self.read_one(e.value)
                elif e.role == R_LATE:
                    late_before = self.read_one(e.value)
                self.entries.push_back(e)
            if r.p != r.end:
                raise UnsupportedRowError("bytes after the row")
        if not held & (1u << -R_IDS):
            self.added.push_back(R_IDS)
        # The events, as ``_pass.Walk.step`` applies them.
        cdef long long applied = 0, duplicates = 0, lates = 0
        cdef int64_t ts
        cdef Span eid, item, surface, etype
        cdef bint is_late, seen, hashed = False
        cdef uint64_t h
        cdef vector[int] *fed
        cdef list kept = []  # the bytes the values point into (a last event's fields)
        for i in range(start, stop):
            f = &columns.fields[columns.order[i]]
            ts = columns.times[i]
            eid.p = f.event_id.p
            eid.n = f.event_id.n
            t = self.event_types[i - start]
            if ts <= watermark:
                seen = False
                if not hashed and self.ids.size() > <size_t>SCAN_IDS:
                    for j in range(<Py_ssize_t>self.ids.size()):
                        self.id_hashes.insert(fnv(self.ids[j]))
                    hashed = True
                if hashed:
                    h = fnv(eid)
                    if self.id_hashes.count(h):
                        seen = self.has_id(eid)
                else:
                    seen = self.has_id(eid)
                if seen:
                    duplicates += 1
                    continue
            self.ids.push_back(eid)
            if hashed:
                self.id_hashes.insert(fnv(eid))
            if ts < first or not first:
                first = ts
            is_late = ts < watermark - bound
            if is_late:
                lates += 1
            elif ts > watermark:
                watermark = ts
            applied += 1
            fed = &self.fed_late[t] if is_late else &self.fed_on_time[t]
            if fed.size() == 0:
                continue
            etype.p = f.event_type.p
            etype.n = f.event_type.n
            item.p = f.item_id.p if f.item_id.present else NULL
            item.n = f.item_id.n if f.item_id.present else 0
            surface.p = f.surface.p
            surface.n = f.surface.n
            payload = None
            if self.payload_read[t]:
                try:
                    if f.payload == NULL:
                        payload = {}
                    else:
                        payload = _decode_payload(
                            PyBytes_FromStringAndSize(f.payload, f.payload_n))
                except Exception:  # _pass decodes it when a kind asks for it
                    raise UnsupportedRowError("a payload msgspec refuses") from None
            for j in range(<Py_ssize_t>fed.size()):
                slot = fed[0][j]
                self.update(slot, etype, item, surface, ts, payload, kept)
        # The row written back: its keys in their order, then those added, as the
        # dict of ``_pass`` orders them.
        if not held & (1u << -R_T):
            self.added.push_back(R_T)
        if not held & (1u << -R_FIRST):
            self.added.push_back(R_FIRST)
        if lates and not held & (1u << -R_LATE):
            self.added.push_back(R_LATE)
        cdef vector[char] *o = &self.out
        o.clear()
        w_map(o, self.entries.size() + self.added.size())
        for i in range(<Py_ssize_t>self.entries.size()):
            e = self.entries[i]
            w_str(o, e.key)
            if e.role >= 0 and self.states[e.role].parsed:
                w_state(o, self.codes[e.role], &self.states[e.role])
            elif e.role == R_IDS:
                self.w_ids(o)
            elif e.role == R_T:
                w_int(o, watermark)
            elif e.role == R_FIRST:
                w_int(o, first)
            elif e.role == R_LATE and lates:
                w_int(o, late_before + lates)
            else:
                w_raw(o, e.value.p, e.value.n)
        for i in range(<Py_ssize_t>self.added.size()):
            slot = self.added[i]
            if slot >= 0:
                w_str(o, self.names[slot])
                w_state(o, self.codes[slot], &self.states[slot])
            else:
                w_str(o, self.book[-slot])
                if slot == R_IDS:
                    self.w_ids(o)
                elif slot == R_T:
                    w_int(o, watermark)
                elif slot == R_FIRST:
                    w_int(o, first)
                elif slot == R_LATE:
                    w_int(o, lates)
        counts[0] = applied
        counts[1] = duplicates
        counts[2] = lates
        return PyBytes_FromStringAndSize(o.data(), o.size())

    cdef bint repeated(self, Span key) noexcept:
        """True when ``key`` is among the row's keys read so far."""
        cdef size_t i
        for i in range(self.entries.size()):
            if same(self.entries[i].key, key):
                return True
        return False

    cdef int role_of(self, Span key) noexcept:
        """A row key's role: its feature's slot, a bookkeeping key's R_*, else R_OTHER."""
        cdef Py_ssize_t slot
        cdef int role
        for slot in range(self.nkinds):
            if same(key, self.names[slot]):
                return slot
        for role in range(-R_IDS, -R_LATE + 1):
            if same(key, self.book[role]):
                return -role
        return R_OTHER

    cdef int64_t read_one(self, Span value) except? -1:
        cdef Reader r
        cdef int64_t v
        r.p = <const unsigned char *>value.p
        r.end = r.p + value.n
        read_int(&r, &v)
        return v

    cdef int read_ids(self, Span value) except -1:
        cdef Reader r
        r.p = <const unsigned char *>value.p
        r.end = r.p + value.n
        cdef Py_ssize_t n = read_array(&r), i
        for i in range(n):
            self.ids.push_back(read_text(&r))
        return 0

    cdef bint has_id(self, Span eid) noexcept:
        cdef size_t i
        for i in range(self.ids.size()):
            if same(self.ids[i], eid):
                return True
        return False

    cdef void w_ids(self, vector[char] *o) noexcept:
        cdef size_t n = self.ids.size(), i
        cdef size_t first = n - RECENT_IDS if n > <size_t>RECENT_IDS else 0
        w_array(o, n - first)
        for i in range(first, n):
            w_str(o, self.ids[i])

    cdef int created(self, Py_ssize_t slot) except -1:
        """A feature's value set where the row held none: its key goes after the row's."""
        self.states[slot].exists = True
        self.added.push_back(slot)
        return 0

    cdef int update(self, Py_ssize_t slot, Span etype, Span item, Span surface, int64_t ts,
                    object payload, list kept) except -1:
        cdef State *s = &self.states[slot]
        cdef int code = self.codes[slot]
        cdef KV *kv
        cdef KV fresh
        cdef Buckets *b
        cdef Buckets nb
        cdef size_t j, count, pos
        cdef Py_ssize_t found
        cdef object x
        if code == COUNT:
            if not s.exists:
                self.created(slot)
            kv = find_kv(&s.kv, etype)
            if kv == NULL:
                fresh.key = etype
                fresh.n = 1
                s.kv.push_back(fresh)
            else:
                kv.n += 1
        elif code == WINDOW:
            if not s.exists:
                self.created(slot)
            b = NULL
            for j in range(s.buckets.size()):
                if same(s.buckets[j].key, etype):
                    b = &s.buckets[j]
                    break
            if b == NULL:
                nb.key = etype
                s.buckets.push_back(nb)
                b = &s.buckets.back()
            bump(&b.minutes, floor_div(ts, MINUTE_MS), MINUTES_KEPT)
            bump(&b.hours, floor_div(ts, HOUR_MS), HOURS_KEPT)
        elif code == RECENT:
            if item.p == NULL:
                return 0
            if not s.exists:
                self.created(slot)
            found = -1
            for j in range(s.items.size()):
                if same(s.items[j], item):
                    found = j
                    break
            if found >= 0:
                if s.times[found] > ts:
                    return 0  # a later event of this item is already there
                s.items.erase(s.items.begin() + found)
                s.times.erase(s.times.begin() + found)
            if self.removing[slot] and self.removes(slot, payload):
                return 0  # removed: out of the list, not put back
            count = s.times.size()
            pos = 0
            if count and ts < s.times[0]:
                pos = 1
                while pos < count and s.times[pos] > ts:
                    pos += 1
                if pos >= <size_t>self.sizes[slot]:
                    return 0  # older than every item kept
            s.items.insert(s.items.begin() + pos, item)
            s.times.insert(s.times.begin() + pos, ts)
            if s.items.size() > <size_t>self.sizes[slot]:
                s.items.pop_back()
                s.times.pop_back()
        elif code == LAST_EVENT:
            if s.exists and s.ts > ts:
                return 0
            if not s.exists:
                self.created(slot)
            chosen = {f: payload[f] for f in self.fields[slot] if f in payload}
            encoded = _encode(chosen)
            kept.append(encoded)
            s.ts = ts
            s.item = item
            s.fields.p = PyBytes_AS_STRING(encoded)
            s.fields.n = PyBytes_GET_SIZE(encoded)
        elif code == MEAN:
            x = payload.get(self.field[slot])
            if type(x) is int:
                if not s.exists:
                    self.created(slot)
                    s.isum = PyLong_AsLongLong(x)  # OverflowError: left to _pass
                    s.count = 1
                elif s.is_float:
                    s.fsum += <double>PyLong_AsLongLong(x)
                    s.count += 1
                else:
                    self.add_int(s, PyLong_AsLongLong(x))
                    s.count += 1
            elif type(x) is float:
                if not s.exists:
                    self.created(slot)
                    s.is_float = True
                    s.fsum = PyFloat_AS_DOUBLE(x)
                    s.count = 1
                else:
                    if not s.is_float:
                        s.is_float = True
                        s.fsum = <double>s.isum
                    s.fsum += PyFloat_AS_DOUBLE(x)
                    s.count += 1
            elif isinstance(x, (int, float)) and not isinstance(x, bool):
                raise UnsupportedRowError("a number of a subclass")
        elif code == LAST_TIME:
            if ts > (s.ts if s.exists else 0):
                if not s.exists:
                    self.created(slot)
                s.ts = ts
        elif code == SURFACES:
            if not s.exists:
                self.created(slot)
            kv = find_kv(&s.kv, surface)
            if kv == NULL:
                if ts > 0:
                    fresh.key = surface
                    fresh.n = ts
                    s.kv.push_back(fresh)
            elif ts > kv.n:
                kv.n = ts
        return 0

    cdef int add_int(self, State *s, int64_t x) except -1:
        cdef int64_t total
        if __builtin_add_overflow(s.isum, x, &total):
            raise UnsupportedRowError("a sum beyond 64 bits")
        s.isum = total
        return 0

    cdef bint removes(self, Py_ssize_t slot, object payload) except -1:
        keys = self.remove_keys[slot]
        values = self.remove_values[slot]
        for i in range(len(keys)):
            if payload.get(keys[i]) != values[i]:
                return False
        return True


def row_pass(features):
    """A :class:`RowPass` for ``features`` (a ``_pass.FeaturePass``), or None when one of
    its kinds is not one this module applies (or there are more than 64)."""
    codes = []
    for kind in features.kinds:
        code = CODES.get(type(kind).__name__)
        if code is None or type(kind).__module__ != "headwater.features._kinds":
            return None
        codes.append(code)
    if len(codes) > 64:
        return None
    return RowPass(features, codes)

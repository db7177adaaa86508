# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""A poll's records from the SQLite bus's stored batches, without a Python object per record.

The SQLite bus stores each published batch as one MessagePack array of records (each
record an array: partition, offset, key, kind, value, time). ``RecordBatch`` reads those
bytes in place: each record's fields go into a C array, pointing into the stored bytes,
which the batch holds. It is a sequence of ``Record`` as the bus port promises: a record
is made when something asks for it (by index, slice or iteration), and kept. What the
consumer runtime asks of every poll (its partitions, the positions to commit, the kinds
among it, its keys) it answers from the C array; the feature consumer's reader
(``features/_records.pyx``) reads the values there too. Only the records a handler
iterates, or a dead letter needs, are made.

A stored batch this reader does not take (a field of another type than msgspec writes)
is decoded by msgspec and its records added as they are: msgspec gives its own verdict
on a malformed batch.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromObject, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcmp, memcpy
from headwater._buffer cimport (
    Buf, put, put_byte, put_header, put_int, put_sized, put_str, reserve, take
)
from headwater._msgpack cimport Reader, is_utf8, read_array, read_bin, read_int, read_str


cdef inline object text(const char *p, Py_ssize_t n):
    return PyUnicode_DecodeUTF8(p, n, NULL)


cdef inline int check_text(const char *p, Py_ssize_t n) except -1:
    """Raise ValueError where ``p[:n]`` is not UTF-8, as msgspec refuses such a string."""
    if not is_utf8(p, n):
        raise ValueError("text that is not UTF-8")
    return 0


cdef class RecordBatch:
    """Records read from stored batches: a ``Sequence[Record]``."""

    def __cinit__(self, record_type):
        self.entries = NULL
        self.n = 0
        self.cap = 0
        self.held = []
        self.made = None
        self.record_type = record_type

    def __dealloc__(self):
        free(self.entries)

    cdef int grow(self, Py_ssize_t more) except -1:
        cdef Py_ssize_t cap = self.cap
        cdef Entry *entries
        if self.n + more <= cap:
            return 0
        while cap < self.n + more:
            cap = cap * 2 if cap else 1024
        entries = <Entry *>realloc(self.entries, cap * sizeof(Entry))
        if entries == NULL:
            raise MemoryError()
        self.entries = entries
        self.cap = cap
        return 0

    def add(self, bytes stored, int64_t start, Py_ssize_t most, decode):
        """The records of a stored batch from offset ``start`` on, ``most`` at most, added;
        their number. ``decode`` (msgspec's decoder of a stored batch) reads a batch this
        reader does not take."""
        if self.made is not None:
            raise RuntimeError("records were made from this batch: it can take no more")
        cdef Reader r
        r.p = <const unsigned char *>PyBytes_AS_STRING(stored)
        r.end = r.p + PyBytes_GET_SIZE(stored)
        cdef Py_ssize_t count, i, added = 0, before = self.n
        cdef Entry e
        cdef int64_t partition
        try:
            count = read_array(&r)
            # A record takes seven bytes at least: a count past that is not believed.
            self.grow(min(count, most, PyBytes_GET_SIZE(stored) // 7))
            for i in range(count):
                if added >= most:
                    break
                if read_array(&r) != 6:
                    raise ValueError("a record is not an array of six")
                read_int(&r, &partition)
                if partition < 0 or partition > 0x7FFFFFFF:
                    raise ValueError("a partition out of range")
                e.partition = <int32_t>partition
                read_int(&r, &e.offset)
                read_str(&r, &e.key, &e.key_n)
                check_text(e.key, e.key_n)
                read_str(&r, &e.kind, &e.kind_n)
                check_text(e.kind, e.kind_n)
                read_bin(&r, &e.value, &e.value_n)
                read_int(&r, &e.timestamp_ms)
                if e.offset < start:
                    continue
                self.grow(1)
                self.entries[self.n] = e
                self.n += 1
                added += 1
        except ValueError:
            self.n = before  # msgspec reads this batch, and refuses a malformed one
            return self._add_records(decode(stored), start, most)
        self.held.append(stored)
        return added

    def extend(self, RecordBatch other):
        """``other``'s records added after these."""
        if self.made is not None:
            raise RuntimeError("records were made from this batch: it can take no more")
        if other.n:
            self.grow(other.n)
            memcpy(&self.entries[self.n], other.entries, other.n * sizeof(Entry))
            self.n += other.n
            self.held.append(other)

    def _add_records(self, records, int64_t start, Py_ssize_t most):
        cdef Py_ssize_t added = 0
        cdef Entry e
        cdef const char *p
        cdef Py_ssize_t size
        for record in records:
            if added >= most:
                break
            if record.offset < start:
                continue
            value = record.value
            if type(value) is not bytes:
                value = bytes(value)
            e.partition = <int32_t>record.partition
            e.offset = record.offset
            e.timestamp_ms = record.timestamp_ms
            p = PyUnicode_AsUTF8AndSize(record.key, &size)
            e.key, e.key_n = p, size
            p = PyUnicode_AsUTF8AndSize(record.kind, &size)
            e.kind, e.kind_n = p, size
            e.value, e.value_n = PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value)
            self.held.append((record, value))
            self.grow(1)
            self.entries[self.n] = e
            self.n += 1
            added += 1
        return added

    cdef object make(self, Py_ssize_t i):
        cdef Entry *e
        if self.made is None:
            self.made = [None] * self.n
        record = self.made[i]
        if record is None:
            e = &self.entries[i]
            record = self.record_type(
                e.partition,
                e.offset,
                text(e.key, e.key_n),
                text(e.kind, e.kind_n),
                e.value[:e.value_n],
                e.timestamp_ms,
            )
            self.made[i] = record
        return record

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        cdef Py_ssize_t i
        if isinstance(index, slice):
            return [self.make(i) for i in range(*index.indices(self.n))]
        i = index
        if i < 0:
            i += self.n
        if i < 0 or i >= self.n:
            raise IndexError("record index out of range")
        return self.make(i)

    def __iter__(self):
        cdef Py_ssize_t i
        for i in range(self.n):
            yield self.make(i)

    def __bool__(self):
        return self.n > 0

    def __eq__(self, other):
        if isinstance(other, (RecordBatch, list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self):
        return f"RecordBatch({list(self)!r})"

    def last_offset(self):
        """The offset of the last record (the batch is not empty)."""
        if self.n == 0:
            raise IndexError("an empty batch has no last record")
        return self.entries[self.n - 1].offset

    def positions(self):
        """Each partition's next offset to commit: its last record's, plus one."""
        return self.offsets(False)

    def first_offsets(self):
        """Each partition's first offset among the records."""
        return self.offsets(True)

    def partitions(self):
        """The partitions the records are in."""
        return set(self.offsets(True))

    cdef dict offsets(self, bint first):
        """Per partition, the first offset among the records (``first``), or one past the
        last; looked at where a run of one partition starts or ends, not at each record."""
        cdef dict out = {}
        cdef Py_ssize_t i
        cdef Entry *e
        for i in range(self.n):
            e = &self.entries[i]
            if first:
                if (i == 0 or e.partition != self.entries[i - 1].partition) and (
                    e.partition not in out
                ):
                    out[e.partition] = e.offset
            elif i == self.n - 1 or e.partition != self.entries[i + 1].partition:
                out[e.partition] = e.offset + 1
        return out

    def kinds(self):
        """The kinds among the records (one string object per kind)."""
        return self.distinct(False)

    def keys(self):
        """The distinct keys among the records."""
        return self.distinct(True)

    cdef set distinct(self, bint keys):
        """The distinct keys (or kinds) among the records: a string made where one
        differs from the record's before it."""
        cdef set out = set()
        cdef Py_ssize_t i, n, last_n = -1
        cdef const char *p
        cdef const char *last = NULL
        for i in range(self.n):
            if keys:
                p, n = self.entries[i].key, self.entries[i].key_n
            else:
                p, n = self.entries[i].kind, self.entries[i].kind_n
            if n != last_n or memcmp(p, last, n) != 0:
                last, last_n = p, n
                out.add(text(p, n))
        return out

    def values(self):
        """The records' values, in order."""
        cdef Py_ssize_t i
        return [self.entries[i].value[:self.entries[i].value_n] for i in range(self.n)]


# -- writing stored batches ----------------------------------------------------------

cdef uint32_t CRC_TABLE[256]


cdef void _crc_table() noexcept:
    cdef uint32_t c
    cdef int i, k
    for i in range(256):
        c = <uint32_t>i
        for k in range(8):
            c = (0xEDB88320 ^ (c >> 1)) if c & 1 else (c >> 1)
        CRC_TABLE[i] = c


_crc_table()


cdef inline uint32_t crc32(const char *p, Py_ssize_t n) noexcept:
    """CRC-32 as ``zlib.crc32`` computes it (``bus.base.partition_for``)."""
    cdef uint32_t c = 0xFFFFFFFF
    cdef Py_ssize_t i
    for i in range(n):
        c = CRC_TABLE[(c ^ <unsigned char>p[i]) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def write_batches(
    messages, Py_ssize_t partitions, str signal_kind, dict ends, int64_t timestamp_ms
):
    """``messages`` (``Message``) as the stored batches of their partitions, in one pass
    and without a list per partition: ``([(partition, first offset, last offset,
    timestamp_ms, stored batch), ...] by partition, [(partition, message) of a kind
    other than signal_kind, ...])``. Each message goes to the partition
    ``partition_for`` gives its key, its records numbered from ``ends[partition]`` on
    in the order given; a stored batch is the bytes ``ENCODE_BATCH`` writes for
    ``[(partition, offset, key, kind, value, timestamp_ms), ...]``."""
    if not 1 <= partitions <= 0x7FFFFFFF:
        raise ValueError(f"{partitions} partitions")
    cdef list given = messages if type(messages) is list else list(messages)
    cdef Py_ssize_t n = len(given)
    cdef Py_ssize_t i, part
    cdef list held = [None] * (3 * n)  # the fields read: their bytes are pointed into
    cdef list rare = []
    cdef list rows = []
    # Each message's fields, read once, as a polled record's (``Entry``): its partition,
    # pointers into its key's and kind's UTF-8 and its value's bytes (held above).
    cdef Entry *items = <Entry *>calloc(n if n else 1, sizeof(Entry))
    cdef Buf *bufs = <Buf *>calloc(partitions, sizeof(Buf))
    cdef Py_ssize_t *counts = <Py_ssize_t *>calloc(partitions, sizeof(Py_ssize_t))
    cdef Py_ssize_t *sizes = <Py_ssize_t *>calloc(partitions, sizeof(Py_ssize_t))
    cdef int64_t *next_offsets = <int64_t *>calloc(partitions, sizeof(int64_t))
    cdef Entry *it
    cdef Buf *b
    cdef int64_t first
    if items == NULL or bufs == NULL or counts == NULL or sizes == NULL or next_offsets == NULL:
        free(items); free(bufs); free(counts); free(sizes); free(next_offsets)
        raise MemoryError()
    try:
        for i in range(n):
            m = given[i]
            it = &items[i]
            key = m.key
            kind = m.kind
            raw = m.value
            if type(raw) is not bytes:
                raw = PyBytes_FromObject(raw)  # a bytearray or memoryview: its bytes
            held[3 * i] = key
            held[3 * i + 1] = kind
            held[3 * i + 2] = raw
            it.key = PyUnicode_AsUTF8AndSize(key, &it.key_n)
            it.kind = PyUnicode_AsUTF8AndSize(kind, &it.kind_n)
            it.value = PyBytes_AS_STRING(raw)
            it.value_n = PyBytes_GET_SIZE(raw)
            part = <Py_ssize_t>(<uint64_t>crc32(it.key, it.key_n) % <uint64_t>partitions)
            it.partition = <int32_t>part
            counts[part] += 1
            # An upper bound of the record's bytes: its array's header (1), three
            # integers (9 each at most), the headers of two strings and a value (5 each).
            sizes[part] += 43 + it.key_n + it.kind_n + it.value_n
            if kind is not signal_kind and kind != signal_kind:
                rare.append((part, m))
        for part in range(partitions):
            if counts[part]:
                next_offsets[part] = ends[part]
                reserve(&bufs[part], 5 + sizes[part])
                put_header(&bufs[part], counts[part])
        for i in range(n):
            it = &items[i]
            b = &bufs[it.partition]
            put_byte(b, <char>0x96)  # an array of six
            put_int(b, it.partition)
            put_int(b, next_offsets[it.partition])
            next_offsets[it.partition] += 1
            put_sized(b, it.key, it.key_n, True)
            put_sized(b, it.kind, it.kind_n, True)
            put_sized(b, it.value, it.value_n, False)
            put_int(b, timestamp_ms)
        for part in range(partitions):
            if counts[part]:
                first = next_offsets[part] - counts[part]
                rows.append(
                    (part, first, next_offsets[part] - 1, timestamp_ms, take(&bufs[part]))
                )
        return rows, rare
    finally:
        for part in range(partitions):
            free(bufs[part].data)
        free(items)
        free(bufs)
        free(counts)
        free(sizes)
        free(next_offsets)

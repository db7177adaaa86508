# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Bus records to a ``signals.SignalBatch``, compiled to C: no Python object per signal.

``read_batch`` reads each record's bytes (a signal as ``headwater.contract.signal``
encodes it: a MessagePack array of ``RECORD_FIELDS``, or a record of version 1, a map
keyed by field name; timestamps as the MessagePack timestamp extension) into a
``Columns`` (``_records.pxd``): each event's fields as pointers into the record's bytes,
its time in milliseconds as ``_pass.event_ms`` computes it from the decoded datetime,
grouped by user in bus order; each publish request's events are counted per type, once
for all its runs. The pass over stored rows (``_rows``) reads them there. The batch's
Python columns (event ids, items and users as strings, event types and surfaces as one
string object per distinct value, payloads as their MessagePack bytes) are made from
them when first asked for (``Columns.fill``).

Anything msgspec's decoder of the consumer's signal would read differently from this
reader (a field of another type, a timestamp given as text or finer than a
microsecond, a repeated field, text that is not UTF-8) raises
``UnsupportedRecordError``: the caller then decodes that batch with msgspec, and gets
msgspec's verdict on a malformed record.
"""

from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from headwater.bus._batch cimport Entry as BusEntry, RecordBatch
from headwater._msgpack cimport (
    Reader, Span, fnv1a, is_array_head, is_nil, is_utf8, named, read_array, read_int, read_map,
    read_str, read_timestamp, skip_value,
)


class UnsupportedRecordError(ValueError):
    """A record this reader does not take; decode the batch with msgspec instead."""


cdef bytes EMPTY_MAP = b"\x80"
# Distinct event types and surfaces kept as one string each; past this many, the rest
# are decoded event by event (a batch has a handful of each).
cdef enum:
    KEPT = 64


cdef inline object text(const char *p, Py_ssize_t n):
    try:
        return PyUnicode_DecodeUTF8(p, n, NULL)
    except UnicodeDecodeError:
        raise UnsupportedRecordError("text that is not UTF-8") from None


cdef class Strings:
    """Few distinct values (event types, surfaces, producers): one string object each,
    found by their bytes without decoding them again."""

    cdef char *data[KEPT]
    cdef Py_ssize_t sizes[KEPT]
    cdef list values
    cdef Py_ssize_t count

    def __cinit__(self):
        self.values = []
        self.count = 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.count):
            free(self.data[i])

    cdef object get(self, const char *p, Py_ssize_t n):
        cdef Py_ssize_t i
        cdef char *copy
        for i in range(self.count):
            if self.sizes[i] == n and memcmp(self.data[i], p, n) == 0:
                return self.values[i]
        value = text(p, n)
        if self.count < KEPT:
            copy = <char *>malloc(n if n else 1)
            if copy == NULL:
                raise MemoryError()
            memcpy(copy, p, n)
            self.data[self.count] = copy
            self.sizes[self.count] = n
            self.values.append(value)
            self.count += 1
        return value


cdef struct Entry:
    uint64_t hash
    const char *p
    Py_ssize_t n
    Py_ssize_t slot  # -1: empty


cdef class Users:
    """The batch's users by their id's bytes (open addressing, FNV-1a): a user seen
    before is found without decoding or hashing a string (the bytes stay alive in the
    records while the batch is read). The table starts small and doubles whenever it
    would be more than half full: its size follows the batch's users, not its events (a
    table sized for every event of a large batch was set up for longer than it was used)."""

    cdef Entry *entries
    cdef uint64_t mask
    cdef Py_ssize_t count

    def __cinit__(self):
        self.entries = NULL
        self.count = 0
        self.resize(1024)

    def __dealloc__(self):
        free(self.entries)

    cdef int resize(self, uint64_t size) except -1:
        """Move every entry into a table of ``size`` (a power of two) entries."""
        cdef Entry *old = self.entries
        cdef uint64_t old_size = self.mask + 1 if old != NULL else 0
        cdef uint64_t i, j
        cdef Entry *table = <Entry *>malloc(size * sizeof(Entry))
        if table == NULL:
            raise MemoryError()
        for i in range(size):
            table[i].slot = -1
        for i in range(old_size):
            if old[i].slot >= 0:
                j = old[i].hash & (size - 1)
                while table[j].slot >= 0:
                    j = (j + 1) & (size - 1)
                table[j] = old[i]
        self.entries = table
        self.mask = size - 1
        free(old)
        return 0

    cdef Py_ssize_t find(self, const char *p, Py_ssize_t n) noexcept:
        """The slot of the user ``p[:n]``, -1 when not seen."""
        cdef uint64_t h = fnv1a(p, n)
        cdef uint64_t i = h & self.mask
        cdef Entry *e
        while True:
            e = &self.entries[i]
            if e.slot < 0:
                return -1
            if e.hash == h and e.n == n and memcmp(e.p, p, n) == 0:
                return e.slot
            i = (i + 1) & self.mask

    cdef int add(self, const char *p, Py_ssize_t n, Py_ssize_t slot) except -1:
        """Record a user not yet seen."""
        if 2 * (self.count + 1) > <Py_ssize_t>(self.mask + 1):
            self.resize(2 * (self.mask + 1))
        cdef uint64_t h = fnv1a(p, n)
        cdef uint64_t i = h & self.mask
        while self.entries[i].slot >= 0:
            i = (i + 1) & self.mask
        self.entries[i].hash = h
        self.entries[i].p = p
        self.entries[i].n = n
        self.entries[i].slot = slot
        self.count += 1
        return 0


cdef class Columns:
    """A batch's events as read (``_records.pxd``): what ``SignalBatch`` makes its columns
    of when they are first asked for, and what ``_rows`` reads without them."""

    def __dealloc__(self):
        free(self.fields)
        free(self.order)
        free(self.times)

    def fill(self, batch):
        """Set ``batch``'s columns (event ids, types, items, surfaces, times, payloads)."""
        cdef Py_ssize_t i, n = self.n
        cdef Fields *f
        cdef Strings type_names = Strings(), surface_names = Strings()
        cdef list ids = [None] * n, types = [None] * n, items = [None] * n
        cdef list surfaces = [None] * n, times = [None] * n, payloads = [None] * n
        for i in range(n):
            f = &self.fields[self.order[i]]
            ids[i] = text(f.event_id.p, f.event_id.n)
            types[i] = type_names.get(f.event_type.p, f.event_type.n)
            if f.item_id.present:
                items[i] = text(f.item_id.p, f.item_id.n)
            surfaces[i] = surface_names.get(f.surface.p, f.surface.n)
            times[i] = self.times[i]
            if f.payload == NULL or (f.payload_n == 1 and f.payload[0] == b"\x80"[0]):
                payloads[i] = EMPTY_MAP
            else:
                payloads[i] = PyBytes_FromStringAndSize(f.payload, f.payload_n)
        batch.event_ids = ids
        batch.types = types
        batch.items = items
        batch.surfaces = surfaces
        batch.times = times
        batch.payloads = payloads


cdef inline int check_text(const char *p, Py_ssize_t n) except -1:
    """Raise as ``text`` would for ``p[:n]``, without keeping a string."""
    if not is_utf8(p, n):
        raise UnsupportedRecordError("text that is not UTF-8")
    return 0


cdef int read_signal(const unsigned char *data, Py_ssize_t size, Fields *f) except -1:
    """One record's fields (pointers into ``data``)."""
    cdef Reader r
    r.p = data
    r.end = data + size
    f.event_id.present = f.event_type.present = f.user_id.present = False
    f.surface.present = f.item_id.present = f.producer.present = f.request_id.present = False
    f.payload = NULL
    f.payload_n = 0
    f.have_timestamp = f.have_received = False
    if is_array_head(data, size):
        return read_signal_array(&r, f)
    cdef Py_ssize_t fields = read_map(&r)
    cdef Py_ssize_t i, keylen
    cdef const char *key
    cdef const unsigned char *start
    cdef int64_t version
    cdef unsigned int seen = 0, bit
    for i in range(fields):
        read_str(&r, &key, &keylen)
        if named(key, keylen, "event_id", 8):
            bit = 1
            read_str(&r, &f.event_id.p, &f.event_id.n); f.event_id.present = True
        elif named(key, keylen, "event_type", 10):
            bit = 2
            read_str(&r, &f.event_type.p, &f.event_type.n); f.event_type.present = True
        elif named(key, keylen, "user_id", 7):
            bit = 4
            read_str(&r, &f.user_id.p, &f.user_id.n); f.user_id.present = True
        elif named(key, keylen, "surface", 7):
            bit = 8
            read_str(&r, &f.surface.p, &f.surface.n); f.surface.present = True
        elif named(key, keylen, "item_id", 7):
            bit = 16
            if is_nil(&r):
                f.item_id.present = False
            else:
                read_str(&r, &f.item_id.p, &f.item_id.n); f.item_id.present = True
        elif named(key, keylen, "producer", 8):
            bit = 32
            read_str(&r, &f.producer.p, &f.producer.n); f.producer.present = True
        elif named(key, keylen, "timestamp", 9):
            bit = 64
            read_timestamp(&r, &f.timestamp); f.have_timestamp = True
        elif named(key, keylen, "received_at", 11):
            bit = 128
            if is_nil(&r):
                f.have_received = False
            else:
                read_timestamp(&r, &f.received_at); f.have_received = True
        elif named(key, keylen, "schema_version", 14):
            bit = 256
            read_int(&r, &version)
        elif named(key, keylen, "payload", 7):
            bit = 512
            start = r.p
            skip_value(&r, 0)
            f.payload = <const char *>start
            f.payload_n = r.p - start
        elif named(key, keylen, "request_id", 10):
            bit = 1024
            read_str(&r, &f.request_id.p, &f.request_id.n); f.request_id.present = True
        else:
            bit = 0
            skip_value(&r, 0)  # a field the signal does not have: msgspec skips it too
        if seen & bit:
            raise UnsupportedRecordError("a record that repeats a field")
        seen |= bit
    if r.p != r.end:
        raise UnsupportedRecordError("bytes after the record")
    if not (f.event_id.present and f.event_type.present and f.user_id.present
            and f.surface.present and f.have_timestamp):
        raise UnsupportedRecordError("a record without a required field")
    return 0


cdef int read_signal_array(Reader *r, Fields *f) except -1:
    """A record of version 2: its fields in ``RECORD_FIELDS`` order, as msgspec reads the
    array (trailing fields missing take their defaults, fields past them are left)."""
    cdef Py_ssize_t fields = read_array(r)
    cdef Py_ssize_t i
    cdef const unsigned char *start
    cdef int64_t version
    if fields < 5:
        raise UnsupportedRecordError("a record without a required field")
    read_str(r, &f.event_id.p, &f.event_id.n); f.event_id.present = True
    read_str(r, &f.event_type.p, &f.event_type.n); f.event_type.present = True
    read_str(r, &f.user_id.p, &f.user_id.n); f.user_id.present = True
    read_str(r, &f.surface.p, &f.surface.n); f.surface.present = True
    read_timestamp(r, &f.timestamp); f.have_timestamp = True
    if fields > 5:
        start = r.p
        skip_value(r, 0)
        f.payload = <const char *>start
        f.payload_n = r.p - start
    if fields > 6 and not is_nil(r):
        read_str(r, &f.item_id.p, &f.item_id.n); f.item_id.present = True
    if fields > 7:
        read_str(r, &f.producer.p, &f.producer.n); f.producer.present = True
    if fields > 8 and not is_nil(r):
        read_timestamp(r, &f.received_at); f.have_received = True
    if fields > 9:
        read_int(r, &version)
    if fields > 10:
        read_str(r, &f.request_id.p, &f.request_id.n); f.request_id.present = True
    for i in range(11, fields):
        skip_value(r, 0)  # a field a later version appends: msgspec leaves it too
    if r.p != r.end:
        raise UnsupportedRecordError("bytes after the record")
    return 0


cdef inline long long millis(int64_t micros) noexcept:
    # As _pass.event_ms computes it from the decoded UTC datetime: the exact
    # microseconds / 10**6 as a double, * 1000, truncated toward zero.
    cdef double seconds = micros / 1e6
    return <long long>(seconds * 1000.0)


def read_batch(records, stored, bint runs, batch):
    """Fill ``batch`` (an empty ``signals.SignalBatch``) from ``records``, skipping those
    below ``stored`` (partition -> next offset to apply); see ``signals.decode_batch``.

    Two passes: every record's fields are read into a C array (pointers into the
    records' bytes) and its user found; then each event's place in the batch's order
    (each user's events together, in bus order) is noted, where its fields are read
    from (``Columns.order``): they are not copied into that order."""
    # The records' bytes are read in place until the columns are made: every record is
    # held until the end (a list of them is, whatever ``records`` was; a ``RecordBatch``
    # holds the bytes its entries point into, and no record need be made from it).
    cdef RecordBatch from_bus = records if type(records) is RecordBatch else None
    cdef list held = (
        [from_bus] if from_bus is not None else records if type(records) is list else list(records)
    )
    cdef Py_ssize_t n = from_bus.n if from_bus is not None else len(held), i, k, users_n, dest
    cdef Fields *f
    cdef Fields *fields = NULL
    cdef bytes value
    cdef Users users = Users()
    cdef list user_names = []
    cdef Columns columns
    cdef list out_runs = [] if runs else None
    # A publish request's events lie in one run per partition, and another request's
    # events on the same partition can cut a run: its runs are counted together.
    cdef dict run_counts = {}
    cdef object run_key
    cdef object received
    cdef dict last = {}
    cdef dict counts = {}
    cdef Strings type_names = Strings(), surface_names = Strings(), producers = Strings()
    # Before the first run: no receive time, request or producer (events without an
    # envelope count in no run, as their age is not known).
    cdef const char *run_producer = ""
    cdef const char *run_request = ""
    cdef Py_ssize_t run_producer_n = 0, run_request_n = 0
    cdef int64_t run_at = 0
    cdef bint run_has_at = False
    cdef Py_ssize_t skipped = 0
    cdef Py_ssize_t *slots = NULL
    cdef Py_ssize_t *fill = NULL
    cdef object etype
    cdef Py_ssize_t slot
    cdef list starts
    # The stored position of the partition the last record came from (records come in
    # runs of one partition): looked up once a run, not once a record. Each partition's
    # last record applied is found by its index (``last_at``), and made once, at the end.
    cdef int64_t partition = -1, r_partition, offset, next_offset = 0
    cdef bint has_next = False
    cdef Py_ssize_t run_last = -1
    cdef dict last_at = {}
    cdef const char *value_p
    cdef Py_ssize_t value_n
    cdef BusEntry *entry
    slots = <Py_ssize_t *>malloc((n if n else 1) * sizeof(Py_ssize_t))
    fields = <Fields *>malloc((n if n else 1) * sizeof(Fields))
    if slots == NULL or fields == NULL:
        free(slots)
        free(fields)
        raise MemoryError()
    try:
        k = 0
        for i in range(n):
            if from_bus is not None:
                entry = &from_bus.entries[i]
                value_p, value_n = entry.value, entry.value_n
                offset, r_partition = entry.offset, entry.partition
            else:
                r = held[i]
                offset, r_partition = r.offset, r.partition
                value = r.value if type(r.value) is bytes else None
                if value is None:  # msgspec reads any buffer
                    raise UnsupportedRecordError("a record value that is not bytes")
                value_p, value_n = PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value)
            if r_partition != partition:
                if run_last >= 0:
                    last_at[partition] = run_last
                partition, run_last = r_partition, -1
                stored_next = stored.get(partition)
                has_next = stored_next is not None
                next_offset = stored_next if has_next else 0
            if has_next and offset < next_offset:
                skipped += 1  # applied before a crash; its position was stored with the row
                continue
            f = &fields[k]
            try:
                read_signal(<const unsigned char *>value_p, value_n, f)
            except UnsupportedRecordError:
                raise
            except ValueError as error:  # a MessagePack reader's (_msgpack.pxd)
                raise UnsupportedRecordError(*error.args) from None
            slot = users.find(f.user_id.p, f.user_id.n)
            if slot < 0:
                slot = len(user_names)
                user_names.append(text(f.user_id.p, f.user_id.n))
                users.add(f.user_id.p, f.user_id.n, slot)
            slots[k] = slot
            k += 1
            # What the columns will hold must decode (else msgspec reads the batch).
            check_text(f.event_id.p, f.event_id.n)
            if f.item_id.present:
                check_text(f.item_id.p, f.item_id.n)
            type_names.get(f.event_type.p, f.event_type.n)
            surface_names.get(f.surface.p, f.surface.n)
            run_last = i
            if out_runs is not None:
                if not f.producer.present:
                    f.producer.p = ""; f.producer.n = 0
                if not f.request_id.present:
                    f.request_id.p = ""; f.request_id.n = 0
                if (f.have_received != run_has_at
                        or (run_has_at and f.received_at != run_at)
                        or f.request_id.n != run_request_n
                        or memcmp(f.request_id.p, run_request, f.request_id.n) != 0
                        or f.producer.n != run_producer_n
                        or memcmp(f.producer.p, run_producer, f.producer.n) != 0):
                    run_has_at, run_at = f.have_received, f.received_at
                    run_request, run_request_n = f.request_id.p, f.request_id.n
                    run_producer, run_producer_n = f.producer.p, f.producer.n
                    received = f.received_at / 1e6 if f.have_received else None
                    run_key = (
                        producers.get(f.producer.p, f.producer.n),
                        received,
                        text(f.request_id.p, f.request_id.n),
                    )
                    counts = run_counts.get(run_key)
                    if counts is None:
                        counts = run_counts[run_key] = {}
                        out_runs.append((run_key[0], received, run_key[2], counts))
                etype = type_names.get(f.event_type.p, f.event_type.n)
                counts[etype] = counts.get(etype, 0) + 1
        if run_last >= 0:
            last_at[partition] = run_last
        for p, at in last_at.items():
            last[p] = from_bus[at] if from_bus is not None else held[at]
        # Each user's events together, in bus order: where each user's slice starts
        # (``fill``), then where each event goes (``slots``, rewritten in place).
        users_n = len(user_names)
        fill = <Py_ssize_t *>malloc((users_n + 1) * sizeof(Py_ssize_t))
        if fill == NULL:
            raise MemoryError()
        for i in range(users_n + 1):
            fill[i] = 0
        for i in range(k):
            fill[slots[i] + 1] += 1
        starts = [0]
        for i in range(users_n):
            fill[i + 1] += fill[i]
            starts.append(fill[i + 1])
        for i in range(k):
            dest = fill[slots[i]]
            fill[slots[i]] += 1
            slots[i] = dest
        # Each event's place; its values are made when first asked for (``Columns.fill``),
        # or never where ``_rows`` reads the batch.
        columns = Columns()
        columns.fields = fields  # the columns own the fields from here on
        fields = NULL
        columns.order = <Py_ssize_t *>malloc((k if k else 1) * sizeof(Py_ssize_t))
        columns.times = <int64_t *>malloc((k if k else 1) * sizeof(int64_t))
        if columns.order == NULL or columns.times == NULL:
            raise MemoryError()
        columns.n = k
        columns.held = held
        for i in range(k):
            dest = slots[i]
            columns.order[dest] = i
            columns.times[dest] = millis(columns.fields[i].timestamp)
        batch.raw = columns
        # Unset: the first read of a column makes them all (``SignalBatch.__getattr__``).
        del batch.event_ids, batch.types, batch.items, batch.surfaces, batch.times
        del batch.payloads
        batch.users = user_names
        batch.starts = starts
        batch.last = last
        batch.skipped = skipped
        batch.runs = out_runs
        return batch
    finally:
        free(slots)
        free(fill)
        free(fields)

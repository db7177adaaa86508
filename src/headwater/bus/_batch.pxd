# The C side of a poll's records read from the SQLite bus's stored batches
# (``_batch.pyx``), which the feature consumer's reader (``features/_records.pyx``) reads
# in place: no Python object per record.
from libc.stdint cimport int32_t, int64_t


cdef struct Entry:
    # One record: its fields as stored, its key, kind and value pointers into the bytes
    # the batch holds.
    int64_t offset
    int64_t timestamp_ms
    int32_t partition
    const char *key
    Py_ssize_t key_n
    const char *kind
    Py_ssize_t kind_n
    const char *value
    Py_ssize_t value_n


cdef class RecordBatch:
    cdef Entry *entries
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    # What the entries point into: the stored batches' bytes, and the records of those
    # only msgspec read.
    cdef list held
    # The records made so far (``None`` where not yet asked for).
    cdef list made
    cdef object record_type
    cdef int grow(self, Py_ssize_t more) except -1
    cdef object make(self, Py_ssize_t i)
    cdef set distinct(self, bint keys)
    cdef dict offsets(self, bint first)

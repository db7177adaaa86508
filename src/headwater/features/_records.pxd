# The C types of _records.pyx that the pass over stored rows (_rows.pyx) reads: a batch's
# events as the reader found them, with no Python object per event.
from libc.stdint cimport int64_t
from headwater._msgpack cimport Span


cdef struct Fields:
    Span event_id, event_type, user_id, surface, item_id, producer, request_id
    const char *payload
    Py_ssize_t payload_n
    int64_t timestamp, received_at
    bint have_timestamp, have_received


cdef class Columns:
    # The batch's events: their fields as read (in bus order), pointers into the bytes of
    # ``held`` (the records); ``order``, where each event of the batch's order (each
    # user's together, in bus order) lies in ``fields``; ``times``, in the batch's order,
    # each in milliseconds as ``_pass.event_ms`` computes it. The event at batch position
    # ``i`` is ``fields[order[i]]``: the fields are not moved into the batch's order.
    cdef Fields *fields
    cdef Py_ssize_t *order
    cdef int64_t *times
    cdef readonly Py_ssize_t n
    cdef list held

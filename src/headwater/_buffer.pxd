# A growable byte buffer for the compiled writers (``archive/_columns.pyx``,
# ``bus/_batch.pyx``): appended to in C, handed to Python as one bytes object.
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdlib cimport realloc
from libc.string cimport memcpy


cdef struct Buf:
    char *data
    Py_ssize_t size
    Py_ssize_t cap


cdef inline int reserve(Buf *b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t need = b.size + extra
    cdef Py_ssize_t cap
    cdef char *grown
    if need <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 256
    while cap < need:
        cap *= 2
    grown = <char *>realloc(b.data, cap)
    if grown == NULL:
        raise MemoryError()
    b.data = grown
    b.cap = cap
    return 0


cdef inline int put(Buf *b, const char *p, Py_ssize_t n) except -1:
    if b.size + n > b.cap:
        reserve(b, n)
    memcpy(b.data + b.size, p, n)
    b.size += n
    return 0


cdef inline int put_byte(Buf *b, char c) except -1:
    if b.size + 1 > b.cap:
        reserve(b, 1)
    b.data[b.size] = c
    b.size += 1
    return 0


cdef inline bytes take(Buf *b):
    return PyBytes_FromStringAndSize(b.data, b.size)

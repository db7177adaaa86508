# A growable byte buffer for the compiled writers (``archive/_columns.pyx``,
# ``bus/_batch.pyx``, ``ingest/_records.pyx``): appended to in C, handed to Python as one
# bytes object; and MessagePack's values written into it as msgspec writes them.
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int64_t, uint8_t, uint64_t
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


cdef inline int put_be(Buf *b, unsigned char tag, uint64_t v, int width) except -1:
    """``tag``, then the low ``width`` bytes of ``v``, big-endian."""
    cdef char be[9]
    cdef int i
    be[0] = <char>tag
    for i in range(width):
        be[1 + i] = <char>((v >> (8 * (width - 1 - i))) & 0xFF)
    return put(b, be, 1 + width)


cdef inline int put_int(Buf *b, int64_t v) except -1:
    """An integer in the smallest MessagePack form, as msgspec writes it."""
    if 0 <= v < 128 or -32 <= v < 0:
        return put_byte(b, <char>(<uint8_t>(v & 0xFF)))
    if v >= 0:
        if v <= 0xFF:
            return put_be(b, 0xCC, <uint64_t>v, 1)
        if v <= 0xFFFF:
            return put_be(b, 0xCD, <uint64_t>v, 2)
        if v <= 0xFFFFFFFF:
            return put_be(b, 0xCE, <uint64_t>v, 4)
        return put_be(b, 0xCF, <uint64_t>v, 8)
    if v >= -128:
        return put_be(b, 0xD0, <uint64_t>v, 1)
    if v >= -32768:
        return put_be(b, 0xD1, <uint64_t>v, 2)
    if v >= -2147483648:
        return put_be(b, 0xD2, <uint64_t>v, 4)
    return put_be(b, 0xD3, <uint64_t>v, 8)


cdef inline int put_sized(Buf *b, const char *p, Py_ssize_t n, bint text) except -1:
    """A string (``text``) or bytes with its header, as msgspec writes them."""
    if text and n < 32:
        put_byte(b, <char>(0xA0 | n))
    elif n <= 0xFF:
        put_be(b, 0xD9 if text else 0xC4, <uint64_t>n, 1)
    elif n <= 0xFFFF:
        put_be(b, 0xDA if text else 0xC5, <uint64_t>n, 2)
    elif n <= 0xFFFFFFFF:
        put_be(b, 0xDB if text else 0xC6, <uint64_t>n, 4)
    else:
        raise ValueError(f"{n} bytes: more than MessagePack holds")
    return put(b, p, n)


cdef inline int put_str(Buf *b, str s) except -1:
    cdef Py_ssize_t n
    cdef const char *p = PyUnicode_AsUTF8AndSize(s, &n)
    return put_sized(b, p, n, True)


cdef inline int put_header(Buf *b, Py_ssize_t n) except -1:
    """The header of an array of ``n``, as msgspec writes it."""
    if n < 16:
        return put_byte(b, <char>(0x90 | n))
    if n <= 0xFFFF:
        return put_be(b, 0xDC, <uint64_t>n, 2)
    return put_be(b, 0xDD, <uint64_t>n, 4)

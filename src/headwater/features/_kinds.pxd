# The C types of _kinds.py where Cython compiles it (pure-Python mode: the .py is the
# one source of the code, this file only declares; the .py runs unchanged as Python).
# _pass.pxd cimports Event and Kind from here: the pass calls each kind's update in C.
# update and read are cpdef, so a kind not declared here still works compiled (through
# a Python call); declared, its update is a C call.
cimport cython

cdef long long MINUTE_MS, HOUR_MS, MINUTES_KEPT, HOURS_KEPT

@cython.locals(out=list, previous=cython.longlong, key=cython.longlong)
cpdef list bucket_list(dict buckets)
@cython.locals(n=Py_ssize_t, newest=cython.longlong, at=cython.longlong, older=cython.longlong,
               i=Py_ssize_t)
cpdef bump(list buckets, long long key, long long kept)

cdef dict _HEADS
cdef list _SECONDS, _MILLIS

@cython.locals(minute=cython.longlong, rest=cython.longlong, head=str, second=str, milli=str)
cpdef str time_text(long long ms)


@cython.final
cdef class Event:
    cdef public long long ts
    cdef public object etype
    cdef public object item
    cdef public object surface
    cdef public object raw
    cdef public object decoded

    cdef object payload(self)


cdef class Kind:
    cdef readonly str name
    cdef readonly object types
    cdef readonly bint skips_late
    cdef public Py_ssize_t slot

    cpdef object update(self, object value, Event ev)
    cpdef object read(self, object value, long long now)


cdef class Count(Kind):
    @cython.locals(counts=dict)
    cpdef object update(self, object value, Event ev)
    cpdef object read(self, object value, long long _now)


cdef class WindowCount(Kind):
    cdef readonly tuple labels, spans, by_minute

    @cython.locals(per_type=dict, pair=list, ts=cython.longlong)
    cpdef object update(self, object value, Event ev)
    @cython.locals(out=dict, w=Py_ssize_t, index=Py_ssize_t,
                   unit=cython.longlong, answer=dict, lo=cython.longlong, hi=cython.longlong,
                   n=cython.longlong, k=cython.longlong, c=cython.longlong, i=Py_ssize_t)
    cpdef object read(self, object value, long long now)


cdef class RecentItems(Kind):
    cdef readonly Py_ssize_t size
    cdef readonly tuple remove_keys, remove_values

    @cython.locals(pair=list, items=list, times=list, ts=cython.longlong, j=Py_ssize_t,
                   count=Py_ssize_t, pos=Py_ssize_t)
    cpdef object update(self, object value, Event ev)
    @cython.locals(i=Py_ssize_t)
    cpdef bint removes(self, object payload) except -1
    @cython.locals(items=list, times=list, i=Py_ssize_t)
    cpdef object read(self, object value, long long _now)


cdef class LastEvent(Kind):
    cdef readonly tuple fields

    @cython.locals(payload=dict)
    cpdef object update(self, object value, Event ev)
    cpdef object read(self, object value, long long _now)


cdef class Mean(Kind):
    cdef readonly object field

    cpdef object update(self, object value, Event ev)
    cpdef object read(self, object value, long long _now)


cdef class LastTime(Kind):
    @cython.locals(ts=cython.longlong)
    cpdef object update(self, object value, Event ev)
    cpdef object read(self, object value, long long _now)


cdef class ActiveSurfaces(Kind):
    cdef readonly long long window

    @cython.locals(surfaces=dict, ts=cython.longlong)
    cpdef object update(self, object value, Event ev)
    cpdef object read(self, object value, long long now)

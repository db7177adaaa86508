# The C types of _pass.py where Cython compiles it (pure-Python mode, as _kinds.pxd).
cimport cython
from cpython.datetime cimport datetime as DateTime

from headwater.features._kinds cimport Event, Kind

cdef long long RECENT_IDS, SCAN_IDS, EXACT_US

@cython.locals(era=cython.longlong, yoe=cython.longlong, doy=cython.longlong, doe=cython.longlong)
cdef long long days_from_civil(long long y, long long m, long long d) noexcept

@cython.locals(dt=DateTime, us=cython.longlong, seconds=cython.double)
cpdef long long event_ms(object when) except? -1


cdef class Walk


cdef class FeaturePass:
    cdef readonly list kinds
    cdef readonly dict by_type

    @cython.locals(kinds=list)
    cpdef tuple fed_by(self, object etype)
    @cython.locals(walk=Walk, ev=Event)
    cpdef tuple apply(self, dict state, object signals, long long bound)
    @cython.locals(walk=Walk, ev=Event, event_ids=list, types=list, items=list, surfaces=list, times=list,
                   payloads=list, i=Py_ssize_t)
    cpdef tuple apply_batch(self, dict state, object batch, Py_ssize_t start,
                            Py_ssize_t stop, long long bound)
    @cython.locals(users=list, starts=list, k=Py_ssize_t, state=dict, counts=tuple,
                   applied=Py_ssize_t, duplicates=Py_ssize_t, late=Py_ssize_t)
    cpdef tuple apply_rows(self, object batch, object rows, tuple codec, long long bound,
                           dict out)


@cython.final
cdef class Walk:
    cdef FeaturePass features
    cdef dict state
    cdef long long bound
    cdef list ids
    cdef long long watermark, first
    cdef set seen
    cdef Py_ssize_t applied, duplicates, lates
    cdef list values
    cdef readonly Event ev

    @cython.locals(ids=list, watermark=cython.longlong, seen=set, late=cython.bint,
                   fed=tuple, kind=Kind, values=list, state=dict, ev=Event,
                   features=FeaturePass)
    cdef bint step(self, object eid, long long ts, object etype) except -1
    @cython.locals(state=dict, ids=list)
    cpdef tuple finish(self)

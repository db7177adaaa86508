# The C types of _pass.py where Cython compiles it (pure-Python mode, as _kinds.pxd).
cimport cython
from cpython.datetime cimport datetime as DateTime

from headwater.features._kinds cimport Event, Kind

cdef long long RECENT_IDS, SCAN_IDS, EXACT_US

@cython.locals(era=cython.longlong, yoe=cython.longlong, doy=cython.longlong, doe=cython.longlong)
cdef long long days_from_civil(long long y, long long m, long long d) noexcept

@cython.locals(dt=DateTime, us=cython.longlong, seconds=cython.double)
cpdef long long event_ms(object when) except? -1


cdef class FeaturePass:
    cdef readonly list kinds
    cdef readonly dict by_type

    @cython.locals(kinds=list)
    cpdef tuple fed_by(self, object etype)
    @cython.locals(ids=list, watermark=cython.longlong, first=cython.longlong,
                   applied=Py_ssize_t, duplicates=Py_ssize_t, lates=Py_ssize_t,
                   values=list, ev=Event, ts=cython.longlong, late=cython.bint,
                   kind=Kind, by_type=dict, fed=tuple)
    cpdef tuple apply(self, dict state, object signals, long long bound)

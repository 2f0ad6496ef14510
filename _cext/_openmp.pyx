"""What the OpenMP runtime would give a parallel region (for thread defaults).

scikit-learn's convention: with ``n_jobs=None`` a kernel uses
``omp_get_max_threads()``, the value ``OMP_NUM_THREADS`` and
``threadpoolctl.threadpool_limits`` set, so both bind dartboost too.
"""
from cython.parallel import prange

cdef extern from *:
    """
    /* _OPENMP is defined by the compiler when it compiles with OpenMP; a
       serial build (meson -Dopenmp=disabled) has one thread and no omp.h. */
    #ifdef _OPENMP
    #include <omp.h>
    static int dartboost_omp_max_threads(void) { return omp_get_max_threads(); }
    static int dartboost_omp_num_threads(void) { return omp_get_num_threads(); }
    #else
    static int dartboost_omp_max_threads(void) { return 1; }
    static int dartboost_omp_num_threads(void) { return 1; }
    #endif
    """
    int omp_get_max_threads "dartboost_omp_max_threads"() noexcept nogil
    int omp_get_num_threads "dartboost_omp_num_threads"() noexcept nogil


def omp_max_threads():
    """``omp_get_max_threads()``: threads a region without ``num_threads`` gets
    (1 when the extension was built without OpenMP)."""
    return omp_get_max_threads()


def threads_in_region(int n_threads):
    """Number of threads that actually ran a ``prange`` with ``num_threads=n_threads``
    (the team size seen from inside the region)."""
    cdef int team = 1
    cdef Py_ssize_t i
    for i in prange(1, nogil=True, schedule='static', num_threads=n_threads):
        team = omp_get_num_threads()
    return team

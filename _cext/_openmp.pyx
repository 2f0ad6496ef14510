"""What the OpenMP runtime would give a parallel region (for thread defaults).

scikit-learn's convention: with ``n_jobs=None`` a kernel uses
``omp_get_max_threads()``, the value ``OMP_NUM_THREADS`` and
``threadpoolctl.threadpool_limits`` set, so both bind dartboost too.
"""
from cython.parallel import parallel, prange
cimport openmp


def omp_max_threads():
    """``omp_get_max_threads()``: threads a region without ``num_threads`` gets
    (1 when the extension was built without OpenMP)."""
    return openmp.omp_get_max_threads()


def threads_in_region(int n_threads):
    """Number of threads that actually ran a ``prange`` with ``num_threads=n_threads``
    (the team size seen from inside the region)."""
    cdef int team = 1
    cdef Py_ssize_t i
    for i in prange(1, nogil=True, schedule='static', num_threads=n_threads):
        team = openmp.omp_get_num_threads()
    return team

"""Dtypes shared with the compiled kernels and small engine-wide helpers.

The structured dtypes mirror the packed structs of ``_cext/_common.pxd``.
"""
import numpy as np

from ._cext import _openmp

X_DTYPE = np.float64
X_BINNED_DTYPE = np.uint8
Y_DTYPE = np.float64
G_H_DTYPE = np.float32

#: One histogram bin (``hist_struct``).
HISTOGRAM_DTYPE = np.dtype(
    [("sum_gradients", np.float64), ("sum_hessians", np.float64), ("count", np.uint32)]
)

#: One tree node (``node_struct``). ``left``/``right`` index the same tree.
NODE_DTYPE = np.dtype(
    [
        ("value", np.float64),
        ("count", np.uint32),
        ("feature_idx", np.int32),
        ("num_threshold", np.float64),
        ("missing_go_to_left", np.uint8),
        ("left", np.uint32),
        ("right", np.uint32),
        ("gain", np.float64),
        ("depth", np.uint32),
        ("is_leaf", np.uint8),
        ("bin_threshold", np.uint8),
        ("sum_hessians", np.float64),
    ]
)

#: Largest number of bins for non-missing values; the missing bin comes after.
MAX_BINS = 255


def available_cpus():
    """CPUs this process may run on: its affinity mask and its cgroup CPU quota
    (a container limited to 2 CPUs on a 64-core host gets 2), through joblib's
    ``cpu_count`` (loky's detection, shared with scikit-learn)."""
    from joblib import cpu_count
    return max(1, int(cpu_count()))


def effective_n_threads(n_jobs):
    """Number of OpenMP threads for ``n_jobs`` (scikit-learn's conventions).

    ``None`` means what the OpenMP runtime would use for a region,
    ``omp_get_max_threads()``, so ``OMP_NUM_THREADS`` and
    ``threadpoolctl.threadpool_limits`` bind (as they do for scikit-learn's
    HistGradientBoosting), capped by :func:`available_cpus`. ``-1`` means all
    available CPUs, ``-2`` all but one, and so on; a positive value is used as
    given, capped by the available CPUs.
    """
    n_cpus = available_cpus()
    if n_jobs is None:
        return max(1, min(int(_openmp.omp_max_threads()), n_cpus))
    if n_jobs < 0:
        return max(1, n_cpus + 1 + n_jobs)
    return max(1, min(int(n_jobs), n_cpus))


#: Below this much work (roughly, inner-loop steps) per thread a parallel
#: region costs more than it saves; under oversubscription (many processes
#: each with OpenMP threads, as in joblib or serving workers) an idle barrier
#: can cost milliseconds, so small kernels run on one thread.
MIN_WORK_PER_THREAD = 50_000


def threads_for(work, n_threads):
    """Threads worth using for a kernel doing about ``work`` steps."""
    return int(max(1, min(n_threads, work // MIN_WORK_PER_THREAD)))

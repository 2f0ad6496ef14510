"""Mapping of raw feature values to uint8 bins."""
from cython.parallel import prange

from _common cimport X_DTYPE_C, X_BINNED_DTYPE_C


def map_to_bins(const X_DTYPE_C[:, ::1] X,
                const X_DTYPE_C[::1] thresholds,
                const long long[::1] offsets,
                X_BINNED_DTYPE_C missing_bin_idx,
                int n_threads,
                X_BINNED_DTYPE_C[::1, :] binned,
                const unsigned char[::1] is_categorical=None):
    """Bin ``X`` into the Fortran-ordered ``binned``.

    The thresholds of feature ``f`` are ``thresholds[offsets[f]:offsets[f+1]]``
    (sorted). A value goes to the number of thresholds strictly below it, so
    ``x <= thresholds[b]`` exactly when ``bin(x) <= b``; NaN goes to
    ``missing_bin_idx``. For a feature flagged in ``is_categorical`` the
    "thresholds" are its kept category values (sorted): a value equal to the
    ``b``-th one goes to bin ``b``, any other to the pooled bin after them
    (``offsets[f+1] - offsets[f]``). Rows are processed in blocks so that a block of the
    (usually C-ordered) input stays in cache while each feature is binned.
    """
    cdef:
        Py_ssize_t n_samples = X.shape[0]
        Py_ssize_t n_features = X.shape[1]
        Py_ssize_t block = 512
        Py_ssize_t n_blocks = (n_samples + block - 1) // block
        Py_ssize_t blk, f, i, row_start, row_stop
        long long base, n, half, start
        X_DTYPE_C x
        bint any_cat = is_categorical is not None
        bint cat

    for blk in prange(n_blocks, schedule='static', nogil=True, num_threads=n_threads):
        row_start = blk * block
        row_stop = row_start + block
        if row_stop > n_samples:
            row_stop = n_samples
        for f in range(n_features):
            start = offsets[f]
            cat = any_cat and is_categorical[f] != 0
            for i in range(row_start, row_stop):
                x = X[i, f]
                if x != x:  # NaN
                    binned[i, f] = missing_bin_idx
                else:
                    # count of thresholds < x: branch-free lower bound (the
                    # comparison compiles to a conditional move, so random
                    # values do not cost a mispredicted branch per step)
                    base = start
                    n = offsets[f + 1] - start
                    if n == 0:
                        binned[i, f] = 0
                        continue
                    while n > 1:
                        half = n // 2
                        base = base + half if thresholds[base + half - 1] < x else base
                        n = n - half
                    if thresholds[base] < x:
                        base = base + 1
                    if cat and (base == offsets[f + 1] or thresholds[base] != x):
                        base = offsets[f + 1]  # rare or unseen: the pooled bin
                    binned[i, f] = <X_BINNED_DTYPE_C>(base - start)

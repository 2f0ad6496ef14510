"""Mapping of raw feature values to uint8 bins (dense rows or sparse columns)."""
from cython.parallel import prange, threadid
from libc.string cimport memset

import numpy as np

from _common cimport X_DTYPE_C, X_BINNED_DTYPE_C

ctypedef fused index_t:  # scipy's int32 or int64 sparse indices
    int
    long long


cdef inline X_BINNED_DTYPE_C _bin_of(X_DTYPE_C x, const X_DTYPE_C[::1] thresholds,
                                     long long start, long long stop, bint cat,
                                     X_BINNED_DTYPE_C missing_bin_idx) noexcept nogil:
    """Bin of one value against ``thresholds[start:stop]`` (see map_to_bins)."""
    cdef long long base = start, n = stop - start, half
    if x != x:  # NaN
        return missing_bin_idx
    if n == 0:
        return 0  # one bin (or, categorical, only the pooled one)
    # count of thresholds < x: branch-free lower bound (the comparison
    # compiles to a conditional move, so random values do not cost a
    # mispredicted branch per step)
    while n > 1:
        half = n // 2
        base = base + half if thresholds[base + half - 1] < x else base
        n = n - half
    if thresholds[base] < x:
        base = base + 1
    if cat and (base == stop or thresholds[base] != x):
        base = stop  # rare or unseen: the pooled bin
    return <X_BINNED_DTYPE_C>(base - start)


def map_to_bins(const X_DTYPE_C[:, ::1] X,
                const X_DTYPE_C[::1] thresholds,
                const long long[::1] offsets,
                const long long[::1] features,
                X_BINNED_DTYPE_C missing_bin_idx,
                int n_threads,
                X_BINNED_DTYPE_C[::1, :] binned,
                const unsigned char[::1] is_categorical=None):
    """Bin the columns ``features`` of ``X`` into the Fortran-ordered
    ``binned`` (column ``j`` of ``binned`` is feature ``features[j]``).

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
        Py_ssize_t n_out = features.shape[0]
        Py_ssize_t block = 512
        Py_ssize_t n_blocks = (n_samples + block - 1) // block
        Py_ssize_t blk, f, i, j, row_start, row_stop
        bint any_cat = is_categorical is not None
        bint cat

    for blk in prange(n_blocks, schedule='static', nogil=True, num_threads=n_threads):
        row_start = blk * block
        row_stop = row_start + block
        if row_stop > n_samples:
            row_stop = n_samples
        for j in range(n_out):
            f = features[j]
            cat = any_cat and is_categorical[f] != 0
            for i in range(row_start, row_stop):
                binned[i, j] = _bin_of(X[i, f], thresholds, offsets[f], offsets[f + 1], cat,
                                       missing_bin_idx)


def map_csc_to_bins(const X_DTYPE_C[::1] data,
                    const index_t[::1] indices,
                    const index_t[::1] indptr,
                    const X_DTYPE_C[::1] thresholds,
                    const long long[::1] offsets,
                    const long long[::1] features,
                    X_BINNED_DTYPE_C missing_bin_idx,
                    int n_threads,
                    X_BINNED_DTYPE_C[::1, :] binned,
                    const unsigned char[::1] is_categorical=None):
    """Bin the columns ``features`` of a CSC matrix into ``binned``.

    Column ``j`` of ``binned`` is feature ``features[j]``: it is first filled
    with the bin of 0.0 (the implicit zeros), then each stored entry gets its
    own bin -- the bins a dense copy would get, without ever making one.
    Work is O(rows + stored entries) per column; columns run in parallel.
    """
    cdef:
        Py_ssize_t n_samples = binned.shape[0]
        Py_ssize_t n_out = features.shape[0]
        Py_ssize_t j, k
        long long f
        bint any_cat = is_categorical is not None
        bint cat
        X_BINNED_DTYPE_C zero_bin

    for j in prange(n_out, schedule='dynamic', nogil=True, num_threads=n_threads):
        f = features[j]
        cat = any_cat and is_categorical[f] != 0
        zero_bin = _bin_of(0.0, thresholds, offsets[f], offsets[f + 1], cat, missing_bin_idx)
        if n_samples > 0:
            memset(&binned[0, j], zero_bin, n_samples)
        for k in range(indptr[f], indptr[f + 1]):
            binned[indices[k], j] = _bin_of(data[k], thresholds, offsets[f], offsets[f + 1],
                                            cat, missing_bin_idx)


def largest_bin_rows_csc(const X_DTYPE_C[::1] data,
                         const index_t[::1] indptr,
                         Py_ssize_t n_samples,
                         const X_DTYPE_C[::1] thresholds,
                         const long long[::1] offsets,
                         X_BINNED_DTYPE_C missing_bin_idx,
                         int n_threads,
                         long long[::1] out,
                         long long[:, ::1] counts,
                         const unsigned char[::1] is_categorical=None,
                         X_BINNED_DTYPE_C[::1] best_bin=None):
    """``out[f]``: rows of a CSC matrix in feature ``f``'s most populated
    bin (missing included), counting the implicit zeros; O(stored entries).
    ``counts`` is scratch space of shape ``(n_threads, 256)``; ``best_bin[f]``,
    if given, gets that bin (ties: the lowest)."""
    cdef:
        Py_ssize_t n_features = indptr.shape[0] - 1
        Py_ssize_t f, k, b, t
        long long best
        bint any_cat = is_categorical is not None
        bint cat
        bint want_bin = best_bin is not None
        X_BINNED_DTYPE_C arg

    for f in prange(n_features, schedule='dynamic', nogil=True, num_threads=n_threads):
        t = threadid()
        cat = any_cat and is_categorical[f] != 0
        for b in range(256):
            counts[t, b] = 0
        counts[t, _bin_of(0.0, thresholds, offsets[f], offsets[f + 1], cat,
                          missing_bin_idx)] += n_samples - (indptr[f + 1] - indptr[f])
        for k in range(indptr[f], indptr[f + 1]):
            counts[t, _bin_of(data[k], thresholds, offsets[f], offsets[f + 1], cat,
                              missing_bin_idx)] += 1
        best = 0
        arg = 0
        for b in range(256):
            if counts[t, b] > best:
                best = counts[t, b]
                arg = <X_BINNED_DTYPE_C>b
        out[f] = best
        if want_bin:
            best_bin[f] = arg


def largest_bin_rows_binned(const X_BINNED_DTYPE_C[::1, :] binned, int n_threads,
                            long long[::1] out, long long[:, ::1] counts):
    """``out[f]``: rows of binned column ``f`` in its most populated bin
    (``counts``: scratch space of shape ``(n_threads, 256)``)."""
    cdef:
        Py_ssize_t n_samples = binned.shape[0]
        Py_ssize_t n_features = binned.shape[1]
        Py_ssize_t f, i, b, t
        long long best

    for f in prange(n_features, schedule='dynamic', nogil=True, num_threads=n_threads):
        t = threadid()
        for b in range(256):
            counts[t, b] = 0
        for i in range(n_samples):
            counts[t, binned[i, f]] += 1
        best = 0
        for b in range(256):
            if counts[t, b] > best:
                best = counts[t, b]
        out[f] = best


cdef void _feature_entries(const X_DTYPE_C[::1] data, const index_t[::1] indices,
                           Py_ssize_t k_start, Py_ssize_t k_stop, Py_ssize_t n_samples,
                           const X_DTYPE_C[::1] thresholds, long long t_start,
                           long long t_stop, bint cat, X_BINNED_DTYPE_C missing_bin_idx,
                           X_BINNED_DTYPE_C default, unsigned int first, unsigned int last,
                           Py_ssize_t[::1] cursor, unsigned int[::1] records,
                           unsigned int[::1] col_rows, Py_ssize_t* n_col,
                           bint fill) noexcept nogil:
    """One column's rows outside its ``default`` bin: counted into
    ``cursor[row]`` or (``fill``) written at ``records[cursor[row]]`` as the
    histogram record ``first + min(bin, last)``, the cursor then advanced,
    and at ``col_rows[n_col]`` (``n_col`` advanced; counted too). The
    implicit zeros are rows too when 0.0 is not in the default bin."""
    cdef Py_ssize_t k = k_start, r
    cdef X_BINNED_DTYPE_C b
    cdef X_BINNED_DTYPE_C zero_bin = _bin_of(0.0, thresholds, t_start, t_stop, cat,
                                             missing_bin_idx)
    if zero_bin == default:  # only stored entries can be outside it
        for k in range(k_start, k_stop):
            b = _bin_of(data[k], thresholds, t_start, t_stop, cat, missing_bin_idx)
            if b != default:
                r = indices[k]
                if fill:
                    records[cursor[r]] = first + (b if b < last else last)
                    col_rows[n_col[0]] = <unsigned int>r
                cursor[r] += 1
                n_col[0] += 1
        return
    for r in range(n_samples):  # (indices ascending: a canonical CSC matrix)
        if k < k_stop and indices[k] == r:
            b = _bin_of(data[k], thresholds, t_start, t_stop, cat, missing_bin_idx)
            k = k + 1
        else:
            b = zero_bin
        if b != default:
            if fill:
                records[cursor[r]] = first + (b if b < last else last)
                col_rows[n_col[0]] = <unsigned int>r
            cursor[r] += 1
            n_col[0] += 1


def entries_csc(const X_DTYPE_C[::1] data,
                const index_t[::1] indices,
                const index_t[::1] indptr,
                Py_ssize_t n_samples,
                const X_DTYPE_C[::1] thresholds,
                const long long[::1] offsets,
                const long long[::1] features,
                const long long[::1] first_record,
                const long long[::1] last_record,
                const X_BINNED_DTYPE_C[::1] default_bin,
                X_BINNED_DTYPE_C missing_bin_idx,
                const unsigned char[::1] is_categorical=None):
    """The entries of the columns ``features`` of a canonical CSC matrix
    outside their default bins, row by row: ``(row_ptr, records, col_counts,
    col_rows)`` with row ``r``'s at ``records[row_ptr[r]:row_ptr[r + 1]]``,
    in the order of ``features`` within a row, and the same entries' rows
    column by column (``col_counts[j]`` of column ``j``, ascending) in
    ``col_rows``. Column ``j``'s entry of bin ``b`` is the
    record ``first_record[j] + min(b, last_record[j])`` (its histogram
    record: the missing code on its last one); ``default_bin[j]`` is its
    default. The bins are a dense copy's (``map_csc_to_bins``). Two passes
    over the stored entries (O(rows) more for a column whose zeros are not
    in its default bin); no dense column."""
    cdef:
        Py_ssize_t j, f, r, n_out = features.shape[0], n_col = 0, before
        bint any_cat = is_categorical is not None
        bint cat
        int fill
    if (first_record.shape[0] != n_out or last_record.shape[0] != n_out
            or default_bin.shape[0] != n_out):
        raise ValueError("entries_csc needs a first and last record and a default per column")
    row_ptr_arr = np.zeros(n_samples + 1, dtype=np.intp)
    cursor_arr = np.zeros(n_samples, dtype=np.intp)
    records_arr = np.empty(0, dtype=np.uint32)
    col_rows_arr = np.empty(0, dtype=np.uint32)
    col_counts_arr = np.zeros(n_out, dtype=np.intp)
    cdef Py_ssize_t[::1] row_ptr = row_ptr_arr
    cdef Py_ssize_t[::1] cursor = cursor_arr
    cdef Py_ssize_t[::1] col_counts = col_counts_arr
    cdef unsigned int[::1] records = records_arr
    cdef unsigned int[::1] col_rows = col_rows_arr
    for fill in range(2):
        if fill:
            np.cumsum(cursor_arr, out=row_ptr_arr[1:])
            records_arr = np.empty(row_ptr_arr[n_samples], dtype=np.uint32)
            records = records_arr
            col_rows_arr = np.empty(row_ptr_arr[n_samples], dtype=np.uint32)
            col_rows = col_rows_arr
            cursor_arr[:] = row_ptr_arr[:n_samples]
        n_col = 0
        with nogil:
            for j in range(n_out):
                f = features[j]
                cat = any_cat and is_categorical[f] != 0
                before = n_col
                _feature_entries(data, indices, indptr[f], indptr[f + 1], n_samples,
                                 thresholds, offsets[f], offsets[f + 1], cat, missing_bin_idx,
                                 default_bin[j], <unsigned int>first_record[j],
                                 <unsigned int>last_record[j], cursor, records, col_rows,
                                 &n_col, fill)
                col_counts[j] = n_col - before
    return row_ptr_arr, records_arr, col_counts_arr, col_rows_arr

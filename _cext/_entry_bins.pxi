# The bin of (row, feature) of a mostly-default feature kept as entries
# (dartboost/_sparse_columns.py: SparseBinned), shared by _grow.pyx (the row
# partition) and _predictor.pyx (traversal of the training and validation
# rows): textually included by both, so the two read the same bins.
#
# Row r's entries are records[row_ptr[r] : row_ptr[r+1]], each the
# histogram record (offsets[f] + bin, the missing code on the feature's last
# record) of one of its non-default bins, in increasing record order (the
# features ascending within a row). A feature's bin of the row is then a
# binary search of those records for one in [offsets[f], offsets[f+1]), or
# its default bin when there is none: O(log entries of the row), no dense
# column.

from _common cimport X_BINNED_DTYPE_C


cdef struct entry_table:
    const Py_ssize_t* row_ptr
    const unsigned int* records
    const Py_ssize_t* offsets            # the records' layout (the histograms')
    const X_BINNED_DTYPE_C* default_bin  # per feature: the code of its default bin
    X_BINNED_DTYPE_C missing_bin_idx
    # the same entries' rows feature by feature (feature f's at
    # col_rows[col_ptr[f] : col_ptr[f+1]], ascending), or NULL: not kept
    const Py_ssize_t* col_ptr
    const unsigned int* col_rows


cdef inline Py_ssize_t _lower_bound(const unsigned int* a, Py_ssize_t lo, Py_ssize_t hi,
                                    unsigned int x) noexcept nogil:
    """The first index of the ascending ``a[lo:hi]`` holding ``x`` or more
    (``hi`` if none)."""
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline X_BINNED_DTYPE_C _entry_bin(const entry_table* t, Py_ssize_t row,
                                        Py_ssize_t f) noexcept nogil:
    """Feature ``f``'s bin code of ``row`` (the missing code for its last
    record): the first record of the row at or past ``offsets[f]``, if it is
    the feature's, else the default."""
    cdef Py_ssize_t end = t.row_ptr[row + 1]
    cdef unsigned int first = <unsigned int>t.offsets[f]
    cdef unsigned int stop = <unsigned int>t.offsets[f + 1]
    cdef unsigned int r
    cdef Py_ssize_t lo = _lower_bound(t.records, t.row_ptr[row], end, first)
    if lo < end:
        r = t.records[lo]
        if r < stop:
            if r == stop - 1:
                return t.missing_bin_idx
            return <X_BINNED_DTYPE_C>(r - first)
    return t.default_bin[f]

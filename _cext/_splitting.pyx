"""Best-split search on histograms and the stable partition of a node's rows."""
from cython.parallel import prange
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

import numpy as np

from _common cimport X_BINNED_DTYPE_C, Y_DTYPE_C, hist_struct


cdef struct split_struct:
    Y_DTYPE_C gain
    int feature_idx
    unsigned int bin_idx
    unsigned char missing_go_to_left
    Y_DTYPE_C sum_gradient_left
    Y_DTYPE_C sum_hessian_left
    unsigned int n_samples_left


cdef inline Y_DTYPE_C _score(Y_DTYPE_C g, Y_DTYPE_C h, Y_DTYPE_C l2) noexcept nogil:
    # Reduction in loss of the Newton step -g/(h+l2) (up to the factor 1/2,
    # which LightGBM also leaves out of its gains).
    return g * g / (h + l2)


cdef inline void _consider(split_struct* best, int f, unsigned int b, unsigned char miss_left,
                           Y_DTYPE_C gl, Y_DTYPE_C hl, unsigned int nl,
                           Y_DTYPE_C g, Y_DTYPE_C h, unsigned int n, Y_DTYPE_C parent_score,
                           Y_DTYPE_C l2, unsigned int min_samples_leaf,
                           Y_DTYPE_C min_child_weight) noexcept nogil:
    cdef Y_DTYPE_C gr = g - gl
    cdef Y_DTYPE_C hr = h - hl
    cdef unsigned int nr = n - nl
    cdef Y_DTYPE_C gain
    if nl < min_samples_leaf or nr < min_samples_leaf:
        return
    if hl < min_child_weight or hr < min_child_weight:
        return
    gain = _score(gl, hl, l2) + _score(gr, hr, l2) - parent_score
    if gain > best.gain:
        best.gain = gain
        best.feature_idx = f
        best.bin_idx = b
        best.missing_go_to_left = miss_left
        best.sum_gradient_left = gl
        best.sum_hessian_left = hl
        best.n_samples_left = nl


cdef split_struct _scan_feature(const hist_struct[:, ::1] hist, int f, unsigned int nb,
                               unsigned int missing_bin_idx, Y_DTYPE_C sum_gradients,
                               Y_DTYPE_C sum_hessians, unsigned int n_samples,
                               Y_DTYPE_C parent_score, Y_DTYPE_C l2,
                               unsigned int min_samples_leaf,
                               Y_DTYPE_C min_child_weight) noexcept nogil:
    """Best split of feature ``f`` (``nb`` non-missing bins). The running best
    is a local, written out once, so threads scanning neighbouring features do
    not share a cache line while they scan."""
    cdef split_struct best
    cdef unsigned int b, nl
    cdef Y_DTYPE_C gl, hl
    cdef Y_DTYPE_C gm = hist[f, missing_bin_idx].sum_gradients
    cdef Y_DTYPE_C hm = hist[f, missing_bin_idx].sum_hessians
    cdef unsigned int nm = hist[f, missing_bin_idx].count
    best.gain = -1.
    best.feature_idx = -1
    # missing values go right: left = bins 0..b
    gl = 0.
    hl = 0.
    nl = 0
    for b in range(nb):
        gl = gl + hist[f, b].sum_gradients
        hl = hl + hist[f, b].sum_hessians
        nl = nl + hist[f, b].count
        if b == nb - 1 and nm == 0:
            break  # everything would go left
        _consider(&best, f, b, 0, gl, hl, nl, sum_gradients, sum_hessians, n_samples,
                  parent_score, l2, min_samples_leaf, min_child_weight)
    if nm > 0 and nb > 1:
        # missing values go left: left = missing + bins 0..b
        gl = gm
        hl = hm
        nl = nm
        for b in range(nb - 1):
            gl = gl + hist[f, b].sum_gradients
            hl = hl + hist[f, b].sum_hessians
            nl = nl + hist[f, b].count
            _consider(&best, f, b, 1, gl, hl, nl, sum_gradients, sum_hessians, n_samples,
                      parent_score, l2, min_samples_leaf, min_child_weight)
    return best


def find_best_split(const hist_struct[:, ::1] hist,
                    Y_DTYPE_C sum_gradients,
                    Y_DTYPE_C sum_hessians,
                    unsigned int n_samples,
                    const unsigned int[::1] n_bins_non_missing,
                    const unsigned char[::1] feature_mask,
                    unsigned int missing_bin_idx,
                    Y_DTYPE_C l2_regularization,
                    unsigned int min_samples_leaf,
                    Y_DTYPE_C min_child_weight,
                    Y_DTYPE_C min_split_gain,
                    int n_threads):
    """Best split of a node over the features in ``feature_mask``.

    Each feature is scanned twice: missing values sent right (which also
    covers "all non-missing left, missing right"), then, if the node has
    missing values, sent left. Returns ``None`` when no split has a gain above
    ``min_split_gain``, else a tuple ``(gain, feature, bin, missing_go_to_left,
    sum_gradient_left, sum_hessian_left, n_samples_left)``. Ties go to the lower
    feature index so the result does not depend on the number of threads.
    """
    cdef:
        Py_ssize_t n_features = hist.shape[0]
        Py_ssize_t f
        Y_DTYPE_C parent_score = _score(sum_gradients, sum_hessians, l2_regularization)
        split_struct* per_feature = <split_struct*> malloc(n_features * sizeof(split_struct))
        split_struct best
        int best_f = -1

    for f in range(n_features):
        per_feature[f].gain = -1.
        per_feature[f].feature_idx = -1

    for f in prange(n_features, schedule='dynamic', nogil=True, num_threads=n_threads):
        if feature_mask[f]:
            per_feature[f] = _scan_feature(hist, <int>f, n_bins_non_missing[f], missing_bin_idx,
                                           sum_gradients, sum_hessians, n_samples, parent_score,
                                           l2_regularization, min_samples_leaf,
                                           min_child_weight)

    for f in range(n_features):
        if per_feature[f].feature_idx >= 0 and per_feature[f].gain > min_split_gain \
                and per_feature[f].gain > 0.:
            if best_f < 0 or per_feature[f].gain > best.gain:
                best = per_feature[f]
                best_f = <int>f
    free(per_feature)
    if best_f < 0:
        return None
    return (best.gain, best.feature_idx, best.bin_idx, bool(best.missing_go_to_left),
            best.sum_gradient_left, best.sum_hessian_left, best.n_samples_left)


cdef long long _partition_chunk(const X_BINNED_DTYPE_C[::1, :] X_binned,
                                const unsigned int* rows, Py_ssize_t start, Py_ssize_t stop,
                                int feature_idx, X_BINNED_DTYPE_C bin_threshold,
                                bint missing_go_to_left, X_BINNED_DTYPE_C missing_bin_idx,
                                unsigned int* left, unsigned int* right) noexcept nogil:
    """Split ``rows[start:stop]`` into ``left[start:]`` and ``right[start:]``
    (order kept); returns how many went left.

    Branch-free: every row is written to both buffers and only the side it
    belongs to advances, so a split that sends rows left and right at random
    costs no mispredicted branch per row. Counters are locals (registers),
    not per-thread slots of a shared array, which would put every thread's
    increments on one cache line.
    """
    cdef const X_BINNED_DTYPE_C* col = &X_binned[0, feature_idx]
    cdef Py_ssize_t i
    cdef long long n_left = 0, n_right = 0
    cdef unsigned int row
    cdef X_BINNED_DTYPE_C b
    cdef int goes_left
    for i in range(start, stop):
        row = rows[i]
        b = col[row]
        goes_left = (missing_go_to_left if b == missing_bin_idx else b <= bin_threshold)
        left[start + n_left] = row
        right[start + n_right] = row
        n_left = n_left + goes_left
        n_right = n_right + 1 - goes_left
    return n_left


def split_indices(const X_BINNED_DTYPE_C[::1, :] X_binned,
                  unsigned int[::1] sample_indices,
                  int feature_idx,
                  X_BINNED_DTYPE_C bin_threshold,
                  bint missing_go_to_left,
                  X_BINNED_DTYPE_C missing_bin_idx,
                  unsigned int[::1] left_buffer,
                  unsigned int[::1] right_buffer,
                  int n_threads):
    """Stable in-place partition of ``sample_indices`` (a node's rows).

    Rows going left end up first, in their original order. Each thread
    partitions one contiguous chunk (of at least 8192 rows) into the buffers;
    the chunks are then copied back at offsets given by prefix sums. The
    result does not depend on the chunking. Returns the number of rows going
    left.
    """
    cdef:
        Py_ssize_t n = sample_indices.shape[0]
        int n_chunks = <int>max(1, min(<Py_ssize_t>n_threads, n // 8192))
        Py_ssize_t chunk = (n + n_chunks - 1) // n_chunks
        int t
        Py_ssize_t start, stop
        long long* n_left = <long long*> malloc(n_chunks * sizeof(long long))
        long long* n_right = <long long*> malloc(n_chunks * sizeof(long long))
        long long* left_offset = <long long*> malloc(n_chunks * sizeof(long long))
        long long* right_offset = <long long*> malloc(n_chunks * sizeof(long long))
        long long total_left = 0
        long long total_right = 0

    for t in prange(n_chunks, schedule='static', nogil=True, num_threads=n_chunks):
        start = t * chunk
        stop = start + chunk
        if stop > n:
            stop = n
        n_left[t] = _partition_chunk(X_binned, &sample_indices[0], start, stop, feature_idx,
                                     bin_threshold, missing_go_to_left, missing_bin_idx,
                                     &left_buffer[0], &right_buffer[0])
        n_right[t] = (stop - start) - n_left[t]

    for t in range(n_chunks):
        left_offset[t] = total_left
        total_left += n_left[t]
    for t in range(n_chunks):
        right_offset[t] = total_left + total_right
        total_right += n_right[t]

    for t in prange(n_chunks, schedule='static', nogil=True, num_threads=n_chunks):
        start = t * chunk
        if n_left[t] > 0:
            memcpy(&sample_indices[left_offset[t]], &left_buffer[start],
                   n_left[t] * sizeof(unsigned int))
        if n_right[t] > 0:
            memcpy(&sample_indices[right_offset[t]], &right_buffer[start],
                   n_right[t] * sizeof(unsigned int))

    free(n_left)
    free(n_right)
    free(left_offset)
    free(right_offset)
    return total_left

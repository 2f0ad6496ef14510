# Split search and row partition shared by _splitting.pyx (one node per call)
# and _grow.pyx (the fused per-split step): textually included by both, so
# the two run the same code and find the same splits.

from _common cimport X_BINNED_DTYPE_C, Y_DTYPE_C, hist_struct

from cython.parallel import prange
from libc.string cimport memcpy

# Words of a split's category bitset: one bit per bin of a uint8-binned
# feature (bins 0..255). Bit ``b`` set: rows in bin ``b`` go left.
DEF CAT_WORDS = 8
# A partition chunk has at least this many rows (fewer: not worth a thread).
DEF PARTITION_CHUNK_ROWS = 4096
# Most chunks of one partition (its scratch counters live on the stack).
DEF MAX_PARTITION_CHUNKS = 256


cdef struct split_struct:
    Y_DTYPE_C gain
    int feature_idx
    unsigned int bin_idx
    unsigned char missing_go_to_left
    Y_DTYPE_C sum_gradient_left
    Y_DTYPE_C sum_hessian_left
    unsigned int n_samples_left
    unsigned char is_categorical
    unsigned int cat_bitset[CAT_WORDS]


cdef struct cat_config:
    # LightGBM's categorical safeguards (see find_best_split)
    unsigned int max_cat_to_onehot
    Y_DTYPE_C cat_smooth
    Y_DTYPE_C cat_l2
    unsigned int min_data_per_group
    unsigned int max_cat_threshold


cdef struct gain_config:
    Y_DTYPE_C l1
    # monotonic constraints: children's values are clipped to the node's
    # [lower, upper] and gains are those of the clipped values
    bint bounded
    Y_DTYPE_C lower
    Y_DTYPE_C upper


cdef inline Y_DTYPE_C _threshold_l1(Y_DTYPE_C g, Y_DTYPE_C l1) noexcept nogil:
    # soft-thresholding of a gradient sum (LightGBM's ThresholdL1)
    if g > l1:
        return g - l1
    if g < -l1:
        return g + l1
    return 0.


cdef inline Y_DTYPE_C _score(Y_DTYPE_C g, Y_DTYPE_C h, Y_DTYPE_C l2,
                             Y_DTYPE_C l1=0.) noexcept nogil:
    # Reduction in loss of the Newton step -T(g)/(h+l2), T the L1
    # soft-thresholding (up to the factor 1/2, which LightGBM also leaves out
    # of its gains).
    cdef Y_DTYPE_C t = _threshold_l1(g, l1) if l1 > 0. else g
    return t * t / (h + l2)


cdef inline Y_DTYPE_C _value(Y_DTYPE_C g, Y_DTYPE_C h, Y_DTYPE_C l2,
                             const gain_config* gc) noexcept nogil:
    """The leaf value -T(g)/(h+l2), clipped to the node's bounds."""
    cdef Y_DTYPE_C v = -_threshold_l1(g, gc.l1) / (h + l2)
    if v < gc.lower:
        return gc.lower
    if v > gc.upper:
        return gc.upper
    return v


cdef inline Y_DTYPE_C _score_at(Y_DTYPE_C g, Y_DTYPE_C h, Y_DTYPE_C l2, Y_DTYPE_C l1,
                                Y_DTYPE_C v) noexcept nogil:
    # twice the loss reduction of leaf value v (second-order, L1 included):
    # -(2 T(g) v + (h + l2) v^2), which is _score at the unclipped optimum
    return -(2. * _threshold_l1(g, l1) * v + (h + l2) * v * v)


cdef inline void _consider(split_struct* best, int f, unsigned int b, unsigned char miss_left,
                           Y_DTYPE_C gl, Y_DTYPE_C hl, unsigned int nl,
                           Y_DTYPE_C g, Y_DTYPE_C h, unsigned int n, Y_DTYPE_C parent_score,
                           Y_DTYPE_C l2, unsigned int min_samples_leaf,
                           Y_DTYPE_C min_child_weight, const gain_config* gc,
                           signed char mono) noexcept nogil:
    cdef Y_DTYPE_C gr = g - gl
    cdef Y_DTYPE_C vl, vr
    cdef Y_DTYPE_C hr = h - hl
    cdef unsigned int nr = n - nl
    cdef Y_DTYPE_C gain
    if nl < min_samples_leaf or nr < min_samples_leaf:
        return
    if hl < min_child_weight or hr < min_child_weight:
        return
    if gc.bounded:
        vl = _value(gl, hl, l2, gc)
        vr = _value(gr, hr, l2, gc)
        if (mono > 0 and vl > vr) or (mono < 0 and vl < vr):
            return  # would break the monotonic constraint
        gain = _score_at(gl, hl, l2, gc.l1, vl) + _score_at(gr, hr, l2, gc.l1, vr) - parent_score
    else:
        gain = _score(gl, hl, l2, gc.l1) + _score(gr, hr, l2, gc.l1) - parent_score
    if gain > best.gain:
        best.gain = gain
        best.feature_idx = f
        best.bin_idx = b
        best.missing_go_to_left = miss_left
        best.sum_gradient_left = gl
        best.sum_hessian_left = hl
        best.n_samples_left = nl


cdef inline bint _empty(const hist_struct* bin_) noexcept nogil:
    # exactly nothing in the bin (a subtracted histogram's empty bin may keep
    # rounding residues in its sums: that one is scanned, as it changes gl)
    return bin_.count == 0 and bin_.sum_gradients == 0. and bin_.sum_hessians == 0.


cdef split_struct _scan_feature(const hist_struct* hist, int f, unsigned int nb,
                               unsigned int missing_bin_idx, Y_DTYPE_C sum_gradients,
                               Y_DTYPE_C sum_hessians, unsigned int n_samples,
                               Y_DTYPE_C parent_score, Y_DTYPE_C l2,
                               unsigned int min_samples_leaf,
                               Y_DTYPE_C min_child_weight, const gain_config* gc,
                               signed char mono) noexcept nogil:
    """Best split of feature ``f`` (``nb`` non-missing bins), whose records
    are ``hist[0 .. missing_bin_idx]``, the last one its missing bin. The
    running best is a local, written out once, so threads scanning neighbouring features do
    not share a cache line while they scan."""
    cdef split_struct best
    cdef unsigned int b, nl
    cdef Y_DTYPE_C gl, hl
    cdef Y_DTYPE_C gm = hist[missing_bin_idx].sum_gradients
    cdef Y_DTYPE_C hm = hist[missing_bin_idx].sum_hessians
    cdef unsigned int nm = hist[missing_bin_idx].count
    best.gain = -1.
    best.feature_idx = -1
    best.is_categorical = 0
    # missing values go right: left = bins 0..b
    gl = 0.
    hl = 0.
    nl = 0
    for b in range(nb):
        gl = gl + hist[b].sum_gradients
        hl = hl + hist[b].sum_hessians
        nl = nl + hist[b].count
        if b == nb - 1 and nm == 0:
            break  # everything would go left
        if b > 0 and _empty(&hist[b]):
            continue  # the same candidate as bin b - 1: not strictly better
        _consider(&best, f, b, 0, gl, hl, nl, sum_gradients, sum_hessians, n_samples,
                  parent_score, l2, min_samples_leaf, min_child_weight, gc, mono)
    if nm > 0 and nb > 1:
        # missing values go left: left = missing + bins 0..b
        gl = gm
        hl = hm
        nl = nm
        for b in range(nb - 1):
            gl = gl + hist[b].sum_gradients
            hl = hl + hist[b].sum_hessians
            nl = nl + hist[b].count
            if b > 0 and _empty(&hist[b]):
                continue
            _consider(&best, f, b, 1, gl, hl, nl, sum_gradients, sum_hessians, n_samples,
                      parent_score, l2, min_samples_leaf, min_child_weight, gc, mono)
    return best


cdef split_struct _scan_categorical(const hist_struct* hist, int f, unsigned int nb,
                                    unsigned int missing_bin_idx, Y_DTYPE_C sum_gradients,
                                    Y_DTYPE_C sum_hessians, unsigned int n_samples,
                                    Y_DTYPE_C parent_score, Y_DTYPE_C l2,
                                    unsigned int min_samples_leaf,
                                    Y_DTYPE_C min_child_weight, const gain_config* gc,
                                    const cat_config* cfg) noexcept nogil:
    """Best set split of categorical feature ``f`` (LightGBM's method), whose
    records are ``hist[0 .. missing_bin_idx]``, the last one its missing bin.

    Bins ``0 .. nb-2`` are the kept categories, bin ``nb-1`` pools the rare
    ones and never goes left (so rare, pooled and unseen categories all go
    right, in the binned and raw predictors alike); the missing bin is one
    more candidate category. With at most ``max_cat_to_onehot`` non-empty
    candidates each one is tried alone against the rest (one-vs-rest).
    Otherwise candidates with at least ``cat_smooth`` rows are sorted by
    ``sum_g / (sum_h + cat_smooth)`` and every prefix of that order, from
    either end and of at most ``max_cat_threshold`` categories, is a
    candidate left set; gains then use ``l2 + cat_l2`` and a left set must
    grow by ``min_data_per_group`` rows between two evaluated candidates.
    """
    cdef split_struct best
    cdef int cand[256]
    cdef Y_DTYPE_C ctr[256]
    cdef int n_cand = 0, used, i, j, c, key, direction, pos, max_num_cat
    cdef unsigned int b, nl, cnt_group, nr
    cdef Y_DTYPE_C gl, hl, key_ctr, l2_cat = l2 + cfg.cat_l2
    cdef int best_code = -1
    best.gain = -1.
    best.feature_idx = -1
    best.is_categorical = 1
    for j in range(CAT_WORDS):
        best.cat_bitset[j] = 0
    if nb == 0:
        return best
    for b in range(nb - 1):
        if hist[b].count > 0:
            cand[n_cand] = <int>b
            n_cand = n_cand + 1
    if hist[missing_bin_idx].count > 0:
        cand[n_cand] = <int>missing_bin_idx
        n_cand = n_cand + 1
    if n_cand <= <int>cfg.max_cat_to_onehot:
        for i in range(n_cand):
            c = cand[i]
            _consider(&best, f, <unsigned int>i, 0, hist[c].sum_gradients,
                      hist[c].sum_hessians, hist[c].count, sum_gradients, sum_hessians,
                      n_samples, parent_score, l2, min_samples_leaf, min_child_weight, gc, 0)
        if best.feature_idx >= 0:
            best_code = <int>best.bin_idx
            c = cand[best_code]
            if <unsigned int>c == missing_bin_idx:
                best.missing_go_to_left = 1
            else:
                best.missing_go_to_left = 0
                best.cat_bitset[c >> 5] |= (<unsigned int>1) << (c & 31)
        best.bin_idx = 0  # one-vs-rest: children's values use l2
        return best
    # many-vs-many: drop thin categories, then a stable insertion sort on
    # the smoothed gradient ratio (<= 256 keys: cheaper than a library sort)
    used = 0
    for i in range(n_cand):
        c = cand[i]
        if hist[c].count >= cfg.cat_smooth:
            cand[used] = c
            used = used + 1
    for i in range(used):
        c = cand[i]
        ctr[i] = hist[c].sum_gradients / (hist[c].sum_hessians + cfg.cat_smooth)
    for i in range(1, used):
        key = cand[i]
        key_ctr = ctr[i]
        j = i - 1
        while j >= 0 and ctr[j] > key_ctr:
            cand[j + 1] = cand[j]
            ctr[j + 1] = ctr[j]
            j = j - 1
        cand[j + 1] = key
        ctr[j + 1] = key_ctr
    max_num_cat = min(<int>cfg.max_cat_threshold, (used + 1) // 2)
    for direction in range(2):
        gl = 0.
        hl = 0.
        nl = 0
        cnt_group = 0
        for i in range(min(used, max_num_cat)):
            pos = i if direction == 0 else used - 1 - i
            c = cand[pos]
            gl = gl + hist[c].sum_gradients
            hl = hl + hist[c].sum_hessians
            nl = nl + hist[c].count
            cnt_group = cnt_group + hist[c].count
            if nl < min_samples_leaf or hl < min_child_weight:
                continue
            nr = n_samples - nl
            if nr < min_samples_leaf or nr < cfg.min_data_per_group:
                break
            if sum_hessians - hl < min_child_weight:
                break
            if cnt_group < cfg.min_data_per_group:
                continue
            cnt_group = 0
            _consider(&best, f, <unsigned int>(direction * 256 + i), 0, gl, hl, nl,
                      sum_gradients, sum_hessians, n_samples, parent_score, l2_cat,
                      min_samples_leaf, min_child_weight, gc, 0)
    if best.feature_idx >= 0:
        direction = <int>best.bin_idx // 256
        best.missing_go_to_left = 0
        for i in range(<int>best.bin_idx % 256 + 1):
            c = cand[i if direction == 0 else used - 1 - i]
            if <unsigned int>c == missing_bin_idx:
                best.missing_go_to_left = 1
            else:
                best.cat_bitset[c >> 5] |= (<unsigned int>1) << (c & 31)
    best.bin_idx = 1  # many-vs-many: children's values use l2 + cat_l2
    return best


cdef long long _partition_chunk(const X_BINNED_DTYPE_C* col,
                                const unsigned int* rows, Py_ssize_t start, Py_ssize_t stop,
                                X_BINNED_DTYPE_C bin_threshold,
                                bint missing_go_to_left, X_BINNED_DTYPE_C missing_bin_idx,
                                const unsigned int* cat_bitset,
                                unsigned int* left, unsigned int* right) noexcept nogil:
    """Split ``rows[start:stop]`` into ``left[start:]`` and ``right[start:]``
    (order kept); returns how many went left.

    Branch-free: every row is written to both buffers and only the side it
    belongs to advances, so a split that sends rows left and right at random
    costs no mispredicted branch per row. Counters are locals (registers),
    not per-thread slots of a shared array, which would put every thread's
    increments on one cache line.
    """
    cdef Py_ssize_t i
    cdef long long n_left = 0, n_right = 0
    cdef unsigned int row
    cdef X_BINNED_DTYPE_C b
    cdef int goes_left
    if cat_bitset != NULL:
        # a categorical split: bin b goes left when bit b of the set is on
        for i in range(start, stop):
            row = rows[i]
            b = col[row]
            goes_left = (missing_go_to_left if b == missing_bin_idx
                         else (cat_bitset[b >> 5] >> (b & 31)) & 1)
            left[start + n_left] = row
            right[start + n_right] = row
            n_left = n_left + goes_left
            n_right = n_right + 1 - goes_left
        return n_left
    for i in range(start, stop):
        row = rows[i]
        b = col[row]
        goes_left = (missing_go_to_left if b == missing_bin_idx else b <= bin_threshold)
        left[start + n_left] = row
        right[start + n_right] = row
        n_left = n_left + goes_left
        n_right = n_right + 1 - goes_left
    return n_left




cdef struct search_config:
    # what the split search of every node of a tree shares
    const unsigned int* n_bins_non_missing
    unsigned int missing_bin_idx          # of the binned matrix (partition)
    const Py_ssize_t* offsets             # the histograms' layout (see _hist_fill.pxi)
    Y_DTYPE_C l2
    unsigned int min_samples_leaf
    Y_DTYPE_C min_child_weight
    Y_DTYPE_C min_split_gain
    const unsigned char* is_categorical   # NULL: none
    const signed char* monotonic_cst      # NULL: none
    Y_DTYPE_C l1
    cat_config cat


cdef inline Y_DTYPE_C _node_setup(const search_config* cfg, Y_DTYPE_C sum_gradients,
                                  Y_DTYPE_C sum_hessians, Y_DTYPE_C lower, Y_DTYPE_C upper,
                                  gain_config* gc) noexcept nogil:
    """Fill ``gc`` for a node with these sums and value bounds; return the
    parent score the children's gains are measured against."""
    gc.l1 = cfg.l1
    gc.bounded = cfg.monotonic_cst != NULL
    gc.lower = lower
    gc.upper = upper
    if gc.bounded:
        return _score_at(sum_gradients, sum_hessians, cfg.l2, cfg.l1,
                         _value(sum_gradients, sum_hessians, cfg.l2, gc))
    return _score(sum_gradients, sum_hessians, cfg.l2, cfg.l1)


cdef inline split_struct _scan_any(const search_config* cfg, const hist_struct* hist,
                                   int f, Y_DTYPE_C sum_gradients, Y_DTYPE_C sum_hessians,
                                   unsigned int n_samples, Y_DTYPE_C parent_score,
                                   const gain_config* gc) noexcept nogil:
    """Best split of feature ``f`` of the flat histogram ``hist`` (a set
    split if it is categorical)."""
    cdef signed char mono_f
    cdef const hist_struct* fh = hist + cfg.offsets[f]
    cdef unsigned int missing = <unsigned int>(cfg.offsets[f + 1] - cfg.offsets[f] - 1)
    if cfg.is_categorical != NULL and cfg.is_categorical[f]:
        return _scan_categorical(fh, f, cfg.n_bins_non_missing[f], missing,
                                 sum_gradients, sum_hessians, n_samples, parent_score, cfg.l2,
                                 cfg.min_samples_leaf, cfg.min_child_weight, gc, &cfg.cat)
    mono_f = 0 if cfg.monotonic_cst == NULL else cfg.monotonic_cst[f]
    return _scan_feature(fh, f, cfg.n_bins_non_missing[f], missing,
                         sum_gradients, sum_hessians, n_samples, parent_score, cfg.l2,
                         cfg.min_samples_leaf, cfg.min_child_weight, gc, mono_f)


cdef inline int _pick_best(const search_config* cfg, const split_struct* per_feature,
                           Py_ssize_t n_features) noexcept nogil:
    """Index of the best of the features' splits (ties to the lower feature,
    so the result does not depend on the number of threads); -1 when none
    has a gain above ``min_split_gain``."""
    cdef Py_ssize_t f
    cdef int best_f = -1
    for f in range(n_features):
        if per_feature[f].feature_idx >= 0 and per_feature[f].gain > cfg.min_split_gain \
                and per_feature[f].gain > 0.:
            if best_f < 0 or per_feature[f].gain > per_feature[best_f].gain:
                best_f = <int>f
    return best_f


cdef object _split_tuple(const split_struct* best):
    """The Python form of a split (see ``find_best_split``)."""
    bitset = None
    if best.is_categorical:
        bitset = np.array([best.cat_bitset[j] for j in range(CAT_WORDS)], dtype=np.uint32)
    return (best.gain, best.feature_idx, best.bin_idx, bool(best.missing_go_to_left),
            best.sum_gradient_left, best.sum_hessian_left, best.n_samples_left, bitset)


cdef long long _partition(const X_BINNED_DTYPE_C* col, unsigned int* rows, Py_ssize_t n,
                          X_BINNED_DTYPE_C bin_threshold, bint missing_go_to_left,
                          X_BINNED_DTYPE_C missing_bin_idx, const unsigned int* cat_bitset,
                          unsigned int* left, unsigned int* right,
                          int n_threads) noexcept nogil:
    """Stable in-place partition of ``rows[:n]`` on the feature whose bins
    are ``col``; returns how many go left (see ``split_indices``)."""
    cdef int n_chunks = <int>max(1, min(<Py_ssize_t>n_threads, n // PARTITION_CHUNK_ROWS))
    cdef Py_ssize_t chunk, start, stop
    cdef int t
    cdef long long n_left[MAX_PARTITION_CHUNKS]
    cdef long long left_offset[MAX_PARTITION_CHUNKS]
    cdef long long right_offset[MAX_PARTITION_CHUNKS]
    cdef long long total_left = 0, total_right = 0
    if n_chunks > MAX_PARTITION_CHUNKS:
        n_chunks = MAX_PARTITION_CHUNKS
    chunk = (n + n_chunks - 1) // n_chunks
    if n_chunks == 1:
        n_left[0] = _partition_chunk(col, rows, 0, n, bin_threshold, missing_go_to_left,
                                     missing_bin_idx, cat_bitset, left, right)
        if n_left[0] > 0:
            memcpy(rows, left, n_left[0] * sizeof(unsigned int))
        if n - n_left[0] > 0:
            memcpy(rows + n_left[0], right, (n - n_left[0]) * sizeof(unsigned int))
        return n_left[0]
    for t in prange(n_chunks, schedule='static', num_threads=n_chunks):
        start = t * chunk
        stop = start + chunk
        if stop > n:
            stop = n
        if start > stop:
            start = stop
        n_left[t] = _partition_chunk(col, rows, start, stop, bin_threshold,
                                     missing_go_to_left, missing_bin_idx, cat_bitset,
                                     left, right)
    for t in range(n_chunks):
        start = min(t * chunk, n)
        stop = min(start + chunk, n)
        left_offset[t] = total_left
        total_left += n_left[t]
        right_offset[t] = total_right
        total_right += (stop - start) - n_left[t]
    for t in range(n_chunks):
        right_offset[t] += total_left
    for t in prange(n_chunks, schedule='static', num_threads=n_chunks):
        start = min(t * chunk, n)
        stop = min(start + chunk, n)
        if n_left[t] > 0:
            memcpy(rows + left_offset[t], left + start, n_left[t] * sizeof(unsigned int))
        if (stop - start) - n_left[t] > 0:
            memcpy(rows + right_offset[t], right + start,
                   ((stop - start) - n_left[t]) * sizeof(unsigned int))
    return total_left

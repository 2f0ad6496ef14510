"""Best-split search on histograms and the stable partition of a node's rows."""
from cython.parallel import prange
from libc.stdlib cimport malloc, free
from libc.math cimport INFINITY

import numpy as np

from _common cimport X_BINNED_DTYPE_C, Y_DTYPE_C, hist_struct


include "_split_scan.pxi"

from ._histogram import check_offsets, flat_layout

#: Words of a split's category bitset (see ``_split_scan.pxi``).
CATEGORY_BITSET_WORDS = CAT_WORDS


def find_best_split(hist,
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
                    int n_threads,
                    const unsigned char[::1] is_categorical=None,
                    unsigned int max_cat_to_onehot=4,
                    Y_DTYPE_C cat_smooth=10.,
                    Y_DTYPE_C cat_l2=10.,
                    unsigned int min_data_per_group=100,
                    unsigned int max_cat_threshold=32,
                    Y_DTYPE_C l1_regularization=0.,
                    const signed char[::1] monotonic_cst=None,
                    Y_DTYPE_C lower_bound=-INFINITY,
                    Y_DTYPE_C upper_bound=INFINITY,
                    offsets=None):
    """Best split of a node over the features in ``feature_mask``.

    ``hist`` is the node's histogram: flat, feature ``f``'s records at
    ``offsets[f] .. offsets[f+1]-1`` (its ``n_bins_non_missing[f]`` bins,
    then room up to its last record, the missing bin), or without
    ``offsets`` a ``(n_features, missing_bin_idx + 1)`` array.

    A numerical feature is scanned twice: missing values sent right (which
    also covers "all non-missing left, missing right"), then, if the node has
    missing values, sent left. A feature flagged in ``is_categorical`` gets a
    set split (see ``_scan_categorical``; its safeguards are LightGBM's
    ``max_cat_to_onehot``, ``cat_smooth``, ``cat_l2``, ``min_data_per_group``
    and ``max_cat_threshold``, with LightGBM's defaults). Gains
    soft-threshold gradient sums by ``l1_regularization`` (LightGBM's
    ``lambda_l1``). With ``monotonic_cst`` (-1/0/1 per feature, as
    scikit-learn's HistGradientBoosting) every child value is clipped to the
    node's ``[lower_bound, upper_bound]``, gains are those of the clipped
    values, and a split on a constrained feature whose left and right values
    are in the wrong order is not considered.

    Returns ``None`` when no split has a gain above ``min_split_gain``, else
    a tuple ``(gain, feature, bin, missing_go_to_left, sum_gradient_left,
    sum_hessian_left, n_samples_left, cat_bitset)``; ``cat_bitset`` is
    ``None`` for a numerical split, else a uint32 array of
    :data:`CATEGORY_BITSET_WORDS` words with bit ``b`` set for the bins that
    go left; ``bin`` is then 0 for a one-vs-rest split and 1 for a
    many-vs-many one, whose children's values take ``l2 + cat_l2`` (as
    LightGBM's leaf outputs do). Ties go to the lower feature index so the
    result does not depend on the number of threads.
    """
    cdef:
        Py_ssize_t n_features
        Py_ssize_t f
        Y_DTYPE_C parent_score
        gain_config gc
        search_config cfg
        split_struct* per_feature
        int best_f
        const hist_struct[::1] flat
        const Py_ssize_t[::1] offs
    hist = np.asarray(hist)
    if hist.ndim == 2:
        if hist.shape[1] != missing_bin_idx + 1:
            raise ValueError(f"hist has {hist.shape[1]} bins per feature; the missing bin "
                             f"{missing_bin_idx} must be the last")
        n_features = hist.shape[0]
    elif offsets is not None:
        n_features = np.asarray(offsets).shape[0] - 1
    else:
        raise ValueError("a flat hist needs its offsets")
    if n_bins_non_missing.shape[0] < n_features or feature_mask.shape[0] < n_features:
        raise ValueError("n_bins_non_missing and feature_mask need one entry per feature")
    flat_arr, offsets_arr = flat_layout(hist, n_features, offsets)
    check_offsets(offsets_arr, n_features, np.asarray(n_bins_non_missing)[:n_features])
    flat = flat_arr
    offs = offsets_arr
    cfg.offsets = &offs[0]
    cfg.n_bins_non_missing = &n_bins_non_missing[0] if n_features > 0 else NULL
    cfg.missing_bin_idx = missing_bin_idx
    cfg.l2 = l2_regularization
    cfg.min_samples_leaf = min_samples_leaf
    cfg.min_child_weight = min_child_weight
    cfg.min_split_gain = min_split_gain
    cfg.l1 = l1_regularization
    cfg.cat.max_cat_to_onehot = max_cat_to_onehot
    cfg.cat.cat_smooth = cat_smooth
    cfg.cat.cat_l2 = cat_l2
    cfg.cat.min_data_per_group = min_data_per_group
    cfg.cat.max_cat_threshold = max_cat_threshold
    cfg.monotonic_cst = NULL
    cfg.is_categorical = NULL
    if monotonic_cst is not None:
        if monotonic_cst.shape[0] != n_features:
            raise ValueError("monotonic_cst must have one entry per feature")
        cfg.monotonic_cst = &monotonic_cst[0]
    if is_categorical is not None:
        if is_categorical.shape[0] != n_features:
            raise ValueError("is_categorical must have one flag per feature")
        cfg.is_categorical = &is_categorical[0]
    parent_score = _node_setup(&cfg, sum_gradients, sum_hessians, lower_bound, upper_bound,
                               &gc)
    per_feature = <split_struct*> malloc(max(n_features, 1) * sizeof(split_struct))
    if per_feature == NULL:
        raise MemoryError()
    for f in range(n_features):
        per_feature[f].gain = -1.
        per_feature[f].feature_idx = -1

    for f in prange(n_features, schedule='dynamic', nogil=True, num_threads=n_threads):
        if feature_mask[f]:
            per_feature[f] = _scan_any(&cfg, &flat[0], <int>f, sum_gradients, sum_hessians,
                                       n_samples, parent_score, &gc)

    best_f = _pick_best(&cfg, per_feature, n_features)
    try:
        return None if best_f < 0 else _split_tuple(&per_feature[best_f])
    finally:
        free(per_feature)


def split_indices(const X_BINNED_DTYPE_C[::1, :] X_binned,
                  unsigned int[::1] sample_indices,
                  int feature_idx,
                  X_BINNED_DTYPE_C bin_threshold,
                  bint missing_go_to_left,
                  X_BINNED_DTYPE_C missing_bin_idx,
                  unsigned int[::1] left_buffer,
                  unsigned int[::1] right_buffer,
                  int n_threads,
                  const unsigned int[::1] cat_bitset=None):
    """Stable in-place partition of ``sample_indices`` (a node's rows).

    Rows going left end up first, in their original order. With
    ``cat_bitset`` (a categorical split, :data:`CATEGORY_BITSET_WORDS`
    words) bin ``b`` goes left when its bit is set and ``bin_threshold`` is
    unused. Each thread
    partitions one contiguous chunk (of at least 4096 rows) into the buffers;
    the chunks are then copied back at offsets given by prefix sums. The
    result does not depend on the chunking. Returns the number of rows going
    left.
    """
    cdef:
        Py_ssize_t n = sample_indices.shape[0]
        const unsigned int* bits = NULL
        long long n_left
    if left_buffer.shape[0] < n or right_buffer.shape[0] < n:
        raise ValueError(f"the buffers need room for {n} rows")
    if not 0 <= feature_idx < X_binned.shape[1]:
        raise ValueError(f"feature_idx {feature_idx} out of range")
    if cat_bitset is not None:
        if cat_bitset.shape[0] != CAT_WORDS:
            raise ValueError(f"cat_bitset must have {CAT_WORDS} words")
        bits = &cat_bitset[0]
    if n == 0:
        return 0
    with nogil:
        n_left = _partition(&X_binned[0, feature_idx], &sample_indices[0], n, bin_threshold,
                            missing_go_to_left, missing_bin_idx, bits, &left_buffer[0],
                            &right_buffer[0], n_threads)
    return n_left

"""Exact path-dependent TreeSHAP (Lundberg, Erion & Lee, 2018, Algorithm 2).

For every row and tree, one recursive walk of the tree keeps the "unique
path" of features met from the root: for each, the fraction of the path's
zero (feature unknown: follow the training cover) and one (feature known:
follow the row) weight, and the permutation weights of all subset sizes.
At a leaf, each path feature gets its Shapley share of the leaf value.
Work per row and tree is O(leaves * depth^2).

Interaction values condition the same walk on one feature being known
(``condition=1``) or unknown (``condition=-1``); half the difference is the
pairwise interaction (the SHAP interaction index).

Trees come flattened (see ``dartboost/_tree_view.py``): children indices are
local to a tree, ``-1`` marks leaves, leaf values already carry the tree's
(DART) weight. Rows run in parallel; each thread has its own path buffer.
"""
from cython.parallel import prange, threadid

ctypedef double f64


cdef struct PathElement:
    int feature       # -1 for the root's placeholder
    f64 zero_fraction  # share of the weight when the feature is unknown
    f64 one_fraction   # 1 if the row follows this path when the feature is known, else 0
    f64 pweight        # permutation weight of the subset size this slot stands for


cdef struct Tree:
    # one tree's arrays, already offset to its first node
    const int *feature
    const f64 *threshold
    const unsigned char *missing_left
    const int *left
    const int *right
    const f64 *value
    const f64 *cover
    # categorical splits (NULL without any): node n sends x left when x is
    # one of cat_values[cat_start[n]:cat_stop[n]] (sorted); cat_start[n] < 0
    # marks a numerical split
    const long long *cat_start
    const long long *cat_stop
    const f64 *cat_values


cdef inline void _extend(PathElement *path, int depth, f64 zero_fraction,
                         f64 one_fraction, int feature) noexcept nogil:
    cdef int i
    path[depth].feature = feature
    path[depth].zero_fraction = zero_fraction
    path[depth].one_fraction = one_fraction
    path[depth].pweight = 1.0 if depth == 0 else 0.0
    for i in range(depth - 1, -1, -1):
        path[i + 1].pweight += one_fraction * path[i].pweight * (i + 1) / <f64>(depth + 1)
        path[i].pweight = zero_fraction * path[i].pweight * (depth - i) / <f64>(depth + 1)


cdef inline void _unwind(PathElement *path, int depth, int index) noexcept nogil:
    """Remove slot ``index`` from the path (the inverse of ``_extend``)."""
    cdef f64 one = path[index].one_fraction
    cdef f64 zero = path[index].zero_fraction
    cdef f64 next_one = path[depth].pweight
    cdef f64 tmp
    cdef int i
    for i in range(depth - 1, -1, -1):
        if one != 0:
            tmp = path[i].pweight
            path[i].pweight = next_one * (depth + 1) / ((i + 1) * one)
            next_one = tmp - path[i].pweight * zero * (depth - i) / <f64>(depth + 1)
        else:
            path[i].pweight = path[i].pweight * (depth + 1) / (zero * (depth - i))
    for i in range(index, depth):
        path[i].feature = path[i + 1].feature
        path[i].zero_fraction = path[i + 1].zero_fraction
        path[i].one_fraction = path[i + 1].one_fraction


cdef inline f64 _unwound_sum(const PathElement *path, int depth, int index) noexcept nogil:
    """Total permutation weight of the path with slot ``index`` removed."""
    cdef f64 one = path[index].one_fraction
    cdef f64 zero = path[index].zero_fraction
    cdef f64 next_one = path[depth].pweight
    cdef f64 total = 0.0
    cdef f64 tmp
    cdef int i
    for i in range(depth - 1, -1, -1):
        if one != 0:
            tmp = next_one * (depth + 1) / ((i + 1) * one)
            total += tmp
            next_one = path[i].pweight - tmp * zero * (depth - i) / <f64>(depth + 1)
        elif zero != 0:
            total += path[i].pweight / zero * (depth + 1) / <f64>(depth - i)
    return total


cdef inline bint _in_sorted(const f64 *values, long long lo, long long hi,
                           f64 x) noexcept nogil:
    """``x`` is one of the sorted ``values[lo:hi]``."""
    cdef long long end = hi, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if values[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo < end and values[lo] == x


cdef void _recurse(const Tree *tree, const f64 *x, f64 *phi, int node,
                   PathElement *parent_path, int depth, f64 parent_zero, f64 parent_one,
                   int parent_feature, int condition, int condition_feature,
                   f64 condition_fraction) noexcept nogil:
    cdef PathElement *path
    cdef int i, split, hot, cold, index
    cdef f64 w, xv, hot_zero, cold_zero, incoming_zero, incoming_one
    cdef f64 hot_condition, cold_condition
    if condition_fraction == 0:
        return
    # each level works on its own copy of the path, stacked after the parent's
    path = parent_path + depth + 1
    for i in range(depth + 1):
        path[i] = parent_path[i]
    if condition == 0 or condition_feature != parent_feature:
        _extend(path, depth, parent_zero, parent_one, parent_feature)

    if tree.left[node] < 0:
        for i in range(1, depth + 1):
            w = _unwound_sum(path, depth, i)
            phi[path[i].feature] += (w * (path[i].one_fraction - path[i].zero_fraction)
                                     * tree.value[node] * condition_fraction)
        return

    split = tree.feature[node]
    xv = x[split]
    if xv != xv:
        hot = tree.left[node] if tree.missing_left[node] else tree.right[node]
    elif tree.cat_start != NULL and tree.cat_start[node] >= 0:
        hot = tree.left[node] if _in_sorted(tree.cat_values, tree.cat_start[node],
                                            tree.cat_stop[node], xv) else tree.right[node]
    elif xv <= tree.threshold[node]:
        hot = tree.left[node]
    else:
        hot = tree.right[node]
    cold = tree.right[node] if hot == tree.left[node] else tree.left[node]
    w = tree.cover[node]
    hot_zero = tree.cover[hot] / w
    cold_zero = tree.cover[cold] / w
    incoming_zero = 1.0
    incoming_one = 1.0

    # a feature already on the path: undo its earlier split and redo it here
    index = 0
    while index <= depth:
        if path[index].feature == split:
            break
        index += 1
    if index != depth + 1:
        incoming_zero = path[index].zero_fraction
        incoming_one = path[index].one_fraction
        _unwind(path, depth, index)
        depth -= 1

    hot_condition = condition_fraction
    cold_condition = condition_fraction
    if condition > 0 and split == condition_feature:
        cold_condition = 0.0
        depth -= 1
    elif condition < 0 and split == condition_feature:
        hot_condition = condition_fraction * hot_zero
        cold_condition = condition_fraction * cold_zero
        depth -= 1

    _recurse(tree, x, phi, hot, path, depth + 1, hot_zero * incoming_zero, incoming_one,
             split, condition, condition_feature, hot_condition)
    _recurse(tree, x, phi, cold, path, depth + 1, cold_zero * incoming_zero, 0.0,
             split, condition, condition_feature, cold_condition)


cdef inline Tree _tree_at(const int[::1] feature, const f64[::1] threshold,
                          const unsigned char[::1] missing_left, const int[::1] left,
                          const int[::1] right, const f64[::1] value, const f64[::1] cover,
                          long long start, const long long *cat_start,
                          const long long *cat_stop, const f64 *cat_values) noexcept nogil:
    cdef Tree tree
    tree.feature = &feature[start]
    tree.threshold = &threshold[start]
    tree.missing_left = &missing_left[start]
    tree.left = &left[start]
    tree.right = &right[start]
    tree.value = &value[start]
    tree.cover = &cover[start]
    tree.cat_start = NULL if cat_start == NULL else cat_start + start
    tree.cat_stop = NULL if cat_stop == NULL else cat_stop + start
    tree.cat_values = cat_values
    return tree


cdef struct _Cats:
    const long long *start
    const long long *stop
    const f64 *values


cdef _Cats _cats(const long long[::1] cat_start, const long long[::1] cat_stop,
                 const f64[::1] cat_values, Py_ssize_t n_nodes):
    cdef _Cats c
    c.start = NULL
    c.stop = NULL
    c.values = NULL
    if cat_start is None:
        return c
    if cat_stop is None or cat_values is None or cat_start.shape[0] != n_nodes \
            or cat_stop.shape[0] != n_nodes:
        raise ValueError("cat_start/cat_stop need one entry per node, and cat_values")
    if n_nodes:
        c.start = &cat_start[0]
        c.stop = &cat_stop[0]
    if cat_values.shape[0]:
        c.values = &cat_values[0]
    return c


def path_buffer_bytes(int max_depth):
    """Bytes of path buffer one thread needs for trees up to ``max_depth``."""
    # the walk stacks one copy of the path (at most depth + 2 slots) per level
    return <Py_ssize_t>((max_depth + 2) * (max_depth + 3) // 2 + max_depth + 3) * sizeof(PathElement)


def shap_values(const int[::1] feature, const f64[::1] threshold,
                const unsigned char[::1] missing_left, const int[::1] left,
                const int[::1] right, const f64[::1] value, const f64[::1] cover,
                const long long[::1] tree_offsets, const int[::1] tree_output,
                const f64[:, ::1] X, unsigned char[:, ::1] path_buffers,
                f64[:, :, ::1] out, const long long[::1] cat_start=None,
                const long long[::1] cat_stop=None, const f64[::1] cat_values=None):
    """``out[i, k, j] +=`` SHAP value of feature ``j`` for row ``i`` and output
    ``k``, summed over the trees (``out`` has ``n_features + 1`` columns; the
    last, the expected value, is left to the caller). ``path_buffers`` has one
    row of :func:`path_buffer_bytes` bytes per thread. ``cat_start``,
    ``cat_stop`` (per node, -1 at numerical splits) and ``cat_values`` give
    categorical splits their left categories."""
    cdef:
        Py_ssize_t n_samples = X.shape[0]
        Py_ssize_t n_trees = tree_offsets.shape[0] - 1
        int n_threads = path_buffers.shape[0]
        Py_ssize_t i, t
        PathElement *path
        Tree tree
        _Cats cats = _cats(cat_start, cat_stop, cat_values, feature.shape[0])
    if n_trees == 0 or n_samples == 0:
        return
    for i in prange(n_samples, schedule='dynamic', nogil=True, num_threads=n_threads):
        path = <PathElement *>&path_buffers[threadid(), 0]
        for t in range(n_trees):
            tree = _tree_at(feature, threshold, missing_left, left, right, value, cover,
                            tree_offsets[t], cats.start, cats.stop, cats.values)
            _recurse(&tree, &X[i, 0], &out[i, tree_output[t], 0], 0, path, 0,
                     1.0, 1.0, -1, 0, 0, 1.0)


def shap_interaction_values(const int[::1] feature, const f64[::1] threshold,
                            const unsigned char[::1] missing_left, const int[::1] left,
                            const int[::1] right, const f64[::1] value, const f64[::1] cover,
                            const long long[::1] tree_offsets, const int[::1] tree_output,
                            const long long[::1] feature_offsets,
                            const int[::1] tree_features, const f64[:, ::1] X,
                            unsigned char[:, ::1] path_buffers, f64[:, ::1] scratch,
                            f64[:, :, :, ::1] out, const long long[::1] cat_start=None,
                            const long long[::1] cat_stop=None,
                            const f64[::1] cat_values=None):
    """``out[i, k, a, b] +=`` SHAP interaction value of features ``a, b``
    (``a != b``) and main effect on the diagonal. ``tree_features[
    feature_offsets[t]:feature_offsets[t + 1]]`` lists the distinct features
    tree ``t`` splits on: only those can interact within it. ``scratch``:
    zeros of shape ``(n_threads, 3 * (n_features + 1))``."""
    cdef:
        Py_ssize_t n_samples = X.shape[0]
        Py_ssize_t n_trees = tree_offsets.shape[0] - 1
        Py_ssize_t n_cols = out.shape[3]
        int n_threads = path_buffers.shape[0]
        Py_ssize_t i, t, a, b
        int k, h, fa, fb, tid
        f64 half_diff
        PathElement *path
        f64 *phi
        f64 *on
        f64 *off
        Tree tree
        _Cats cats = _cats(cat_start, cat_stop, cat_values, feature.shape[0])
    if n_trees == 0 or n_samples == 0:
        return
    for i in prange(n_samples, schedule='dynamic', nogil=True, num_threads=n_threads):
        tid = threadid()
        path = <PathElement *>&path_buffers[tid, 0]
        phi = &scratch[tid, 0]
        on = phi + n_cols
        off = phi + 2 * n_cols
        for t in range(n_trees):
            tree = _tree_at(feature, threshold, missing_left, left, right, value, cover,
                            tree_offsets[t], cats.start, cats.stop, cats.values)
            k = tree_output[t]
            _recurse(&tree, &X[i, 0], phi, 0, path, 0, 1.0, 1.0, -1, 0, 0, 1.0)
            for a in range(feature_offsets[t], feature_offsets[t + 1]):
                fa = tree_features[a]
                out[i, k, fa, fa] += phi[fa]
                phi[fa] = 0.0
            for a in range(feature_offsets[t], feature_offsets[t + 1]):
                h = tree_features[a]
                _recurse(&tree, &X[i, 0], on, 0, path, 0, 1.0, 1.0, -1, 1, h, 1.0)
                _recurse(&tree, &X[i, 0], off, 0, path, 0, 1.0, 1.0, -1, -1, h, 1.0)
                for b in range(feature_offsets[t], feature_offsets[t + 1]):
                    fb = tree_features[b]
                    half_diff = (on[fb] - off[fb]) / 2.0
                    on[fb] = 0.0
                    off[fb] = 0.0
                    out[i, k, h, fb] = out[i, k, h, fb] + half_diff
                    out[i, k, h, h] = out[i, k, h, h] - half_diff

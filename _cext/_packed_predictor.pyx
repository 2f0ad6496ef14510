"""Prediction on raw feature values from a compact node layout.

The trees of a model are re-laid out once (:func:`pack_trees`, cached on the
booster, never written to a model file) into 16-byte nodes::

    threshold  float64   numerical threshold; categorical: row of its bitset
    info       uint32    feature index | CATEGORICAL_BIT | MISSING_RIGHT_BIT
    left       uint32    packed index of the left child (the right child is
                         left + 1); a leaf points to itself

Each tree is stored breadth first with siblings side by side, so one step of
a traversal is ``node = left + goes_right`` without a branch, and a leaf is a
fixed point of that step (threshold +inf, missing values go left: no MISSING_RIGHT_BIT). Leaf
values sit in a separate array indexed like the nodes.

Rows are predicted in blocks: for each tree, every row of the block takes one
step per level, all rows in lockstep, for as many levels as the tree is
deep. The rows' steps are independent, so the CPU overlaps their loads
instead of waiting on one row's chain of node -> feature -> node loads, and
the block's rows and the tree's nodes stay in cache. Each row still adds its
trees' weighted leaf values in tree order, one ``factor * value`` at a time,
as the node-by-node traversal did, so raw scores are bit-identical to it and
do not depend on the blocking or the number of threads. Threads take blocks
a few at a time as they finish (dynamic scheduling): on a shared or
virtualised machine a thread that is slowed down then does less of the work
instead of holding up the call.

A categorical split (``CATEGORICAL_BIT``) sends a raw value left when it is
one of the feature's kept categories (``cat_values[cat_offsets[f] + b]``)
whose bin ``b`` is set in the split's bitset; NaN follows the missing
direction and any other value goes right.
"""
from cython.parallel import prange
from cython.parallel cimport threadid
from libc.math cimport INFINITY

import numpy as np

from _common cimport X_DTYPE_C, Y_DTYPE_C, node_struct


cdef struct packed_node:
    double threshold
    unsigned int info
    unsigned int left


#: numpy mirror of ``packed_node`` (16 bytes, naturally aligned).
PACKED_NODE_DTYPE = np.dtype([("threshold", np.float64), ("info", np.uint32),
                              ("left", np.uint32)], align=True)

# compile-time constants (an enum, not module globals the compiler must
# reload after every store through a pointer)
cdef enum:
    FEATURE_MASK = 0x3FFFFFFF
    CAT_BIT = 0x40000000
    MISSING_RIGHT_SHIFT = 31
CATEGORICAL_BIT = CAT_BIT
MISSING_RIGHT_BIT = 1 << MISSING_RIGHT_SHIFT
#: Largest feature index the layout can hold.
MAX_FEATURES = FEATURE_MASK + 1
#: Rows of a block (its feature rows stay in L1/L2 cache while every tree
#: walks them).
BLOCK_ROWS = 128
#: Words per categorical bitset (one bit per bin, bins 0..255).
cdef Py_ssize_t BITSET_WORDS = 8


cdef struct cat_tables:
    const X_DTYPE_C* values
    const long long* offsets
    const unsigned int* bitsets
    # direct lookup of integer categories (see category_lookup)
    const unsigned char* lookup
    const long long* lookup_start
    const long long* lookup_size


#: Largest integer category a direct lookup table covers.
MAX_LOOKUP_CATEGORY = 1 << 16
cdef enum:
    NOT_KEPT = 255  # lookup entry of a value that is not a kept category


def category_lookup(const X_DTYPE_C[::1] cat_values, const long long[::1] cat_offsets,
                    const unsigned char[::1] is_categorical):
    """Direct bin lookup of categorical features whose kept categories are
    all integers in ``[0, MAX_LOOKUP_CATEGORY)`` (label-encoded ones):
    ``lookup[start[f] + v]`` is the bin of category ``v`` (``NOT_KEPT`` if it
    is not kept); ``size[f] = -1`` where categories are looked up by binary
    search instead.

    Returns
    -------
    lookup : ndarray of uint8
    start, size : ndarrays of int64, shape (n_features,)
    """
    cdef Py_ssize_t n_features = is_categorical.shape[0]
    if cat_offsets.shape[0] != n_features + 1:
        raise ValueError("cat_offsets must have n_features + 1 entries")
    start = np.zeros(n_features, dtype=np.int64)
    size = np.full(n_features, -1, dtype=np.int64)
    parts = []
    total = 0
    for f in range(n_features):
        cats = np.asarray(cat_values[cat_offsets[f]:cat_offsets[f + 1]])
        if not is_categorical[f] or cats.size >= NOT_KEPT:
            continue
        if cats.size and not (np.all(cats == np.floor(cats)) and cats[0] >= 0
                              and cats[-1] < MAX_LOOKUP_CATEGORY
                              and np.all(np.diff(cats) > 0)):
            continue
        n = int(cats[-1]) + 1 if cats.size else 0
        table = np.full(n, NOT_KEPT, dtype=np.uint8)
        table[cats.astype(np.int64)] = np.arange(cats.size, dtype=np.uint8)
        start[f], size[f] = total, n
        parts.append(table)
        total += n
    lookup = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)
    return lookup, start, size


cdef int _lockstep_levels(const node_struct* nodes, const unsigned int* ids,
                          const int* depth, Py_ssize_t size, int max_depth) noexcept nogil:
    """Levels every row of a block walks in lockstep before the rows still
    inside the tree go on alone (see :func:`_walk`), from the training rows
    (``count``) of the tree's leaves. Lockstep steps cost about one unit per
    row and level, a row past them about four per level (its step, which has
    the missing-value test, and its place in the list of rows still walking;
    measured), plus one unit per row to build that list. A late boosting tree that sends most rows to shallow leaves and
    a few down a long chain is walked in few lockstep levels."""
    cdef Py_ssize_t j
    cdef int L, best_L = max_depth
    cdef double total = 0, cost, best, w
    for j in range(size):
        if nodes[ids[j]].is_leaf:
            total += nodes[ids[j]].count + 1.0
    best = max_depth * total
    for L in range(max_depth):
        cost = L * total + total
        for j in range(size):
            if nodes[ids[j]].is_leaf and depth[j] > L:
                w = nodes[ids[j]].count + 1.0
                cost += 4.0 * w * (depth[j] - L)
        if cost < best:
            best, best_L = cost, L
    return best_L


def pack_trees(const node_struct[::1] nodes, const long long[::1] tree_offsets,
               int n_features, const unsigned char[::1] is_categorical=None,
               Py_ssize_t n_bitsets=0):
    """The packed layout of trees ``nodes[tree_offsets[t]:tree_offsets[t + 1]]``.

    Returns
    -------
    packed : ndarray of PACKED_NODE_DTYPE, shape (n_nodes,)
    values : ndarray of float64, shape (n_nodes,)
        Leaf value at a leaf's packed index (0 at inner nodes).
    node_ids : ndarray of uint32, shape (n_nodes,)
        Index within its tree (the original numbering) of each packed node.
    roots : ndarray of int64, shape (n_trees,)
        Packed index of each tree's root (tree ``t`` occupies
        ``roots[t]:roots[t] + n_nodes_t``).
    depths : ndarray of int32, shape (n_trees,)
        Levels of each tree walked in lockstep by all rows of a block (at
        most the tree's depth; the rows still inside the tree then go on
        alone).

    Raises
    ------
    ValueError
        If a tree is not a tree (a node reached twice, a child outside the
        tree), a feature index is out of range or a categorical split names a
        bitset that does not exist.
    """
    cdef Py_ssize_t n_nodes = nodes.shape[0]
    cdef Py_ssize_t n_trees = tree_offsets.shape[0] - 1
    if n_trees < 0 or (n_trees == 0 and n_nodes != 0) or (
            n_trees > 0 and (tree_offsets[0] != 0 or tree_offsets[n_trees] != n_nodes)):
        raise ValueError("tree_offsets must run from 0 to the number of nodes")
    if n_nodes >= <Py_ssize_t>0xFFFFFFFF:
        raise ValueError("too many nodes for the packed layout")
    if not 0 <= n_features <= MAX_FEATURES:
        raise ValueError(f"n_features={n_features} is out of the packed layout's range")
    if is_categorical is not None and is_categorical.shape[0] not in (0, n_features):
        raise ValueError("is_categorical must have n_features entries")
    packed_arr = np.zeros(n_nodes, dtype=PACKED_NODE_DTYPE)
    values_arr = np.zeros(n_nodes, dtype=np.float64)
    ids_arr = np.zeros(n_nodes, dtype=np.uint32)
    roots_arr = np.zeros(max(n_trees, 0), dtype=np.int64)
    depths_arr = np.zeros(max(n_trees, 0), dtype=np.int32)
    depth_arr = np.zeros(n_nodes, dtype=np.int32)
    cdef packed_node[::1] packed = packed_arr
    cdef Y_DTYPE_C[::1] values = values_arr
    cdef unsigned int[::1] ids = ids_arr
    cdef long long[::1] roots = roots_arr
    cdef int[::1] depths = depths_arr
    cdef int[::1] depth = depth_arr
    cdef bint has_cat = is_categorical is not None and is_categorical.shape[0] > 0
    cdef Py_ssize_t t, base, size, j, filled, orig, feature
    cdef long long split_row
    cdef int max_depth
    cdef const node_struct* nd
    cdef const char* error = NULL
    with nogil:
        for t in range(n_trees):
            base = tree_offsets[t]
            size = tree_offsets[t + 1] - base
            if size <= 0:
                error = "a tree has no nodes"
                break
            roots[t] = base
            # breadth-first: ids[base + j] is the tree node at packed slot j
            ids[base] = 0
            depth[base] = 0
            filled = 1
            max_depth = 0
            j = 0
            while j < filled:
                orig = ids[base + j]
                nd = &nodes[base + orig]
                if depth[base + j] > max_depth:
                    max_depth = depth[base + j]
                if nd.is_leaf:
                    packed[base + j].threshold = INFINITY
                    packed[base + j].info = 0
                    packed[base + j].left = <unsigned int>(base + j)
                    values[base + j] = nd.value
                else:
                    feature = nd.feature_idx
                    if feature < 0 or feature >= n_features:
                        error = "a split's feature index is out of range"
                        break
                    if filled + 2 > size or nd.left >= size or nd.right >= size:
                        error = "a tree's children do not form a tree"
                        break
                    ids[base + filled] = nd.left
                    ids[base + filled + 1] = nd.right
                    depth[base + filled] = depth[base + j] + 1
                    depth[base + filled + 1] = depth[base + j] + 1
                    packed[base + j].threshold = nd.num_threshold
                    packed[base + j].info = (<unsigned int>feature
                                             | (<unsigned int>(nd.missing_go_to_left == 0)
                                                << MISSING_RIGHT_SHIFT))
                    if has_cat and is_categorical[feature]:
                        split_row = <long long>nd.num_threshold
                        if not (0 <= split_row < n_bitsets and split_row == nd.num_threshold):
                            error = "a categorical split names a bitset that does not exist"
                            break
                        packed[base + j].info |= CAT_BIT
                    packed[base + j].left = <unsigned int>(base + filled)
                    filled += 2
                j += 1
            if error != NULL:
                break
            if filled != size:
                error = "a tree has nodes its root does not reach"
                break
            depths[t] = _lockstep_levels(&nodes[base], &ids[base], &depth[base], size,
                                         max_depth)
    if error != NULL:
        raise ValueError((<bytes>error).decode())
    return packed_arr, values_arr, ids_arr, roots_arr, depths_arr


cdef cat_tables _tables(const X_DTYPE_C[::1] cat_values, const long long[::1] cat_offsets,
                        const unsigned int[::1] cat_bitsets,
                        const unsigned char[::1] cat_lookup,
                        const long long[::1] cat_lookup_start,
                        const long long[::1] cat_lookup_size):
    """Pointers to the categorical tables (NULL when there are none)."""
    cdef cat_tables t
    cdef Py_ssize_t f
    t.values = NULL
    t.offsets = NULL
    t.bitsets = NULL
    t.lookup = NULL
    t.lookup_start = NULL
    t.lookup_size = NULL
    if cat_offsets is None or cat_offsets.shape[0] == 0:
        return t
    if cat_lookup_size is not None:
        n_features = cat_offsets.shape[0] - 1
        if (cat_lookup is None or cat_lookup_start is None
                or cat_lookup_start.shape[0] != n_features
                or cat_lookup_size.shape[0] != n_features):
            raise ValueError("category lookup tables do not match the features")
        for f in range(n_features):
            if cat_lookup_size[f] >= 0 and not (
                    0 <= cat_lookup_start[f]
                    and cat_lookup_start[f] + cat_lookup_size[f] <= cat_lookup.shape[0]):
                raise ValueError("category lookup tables run out of range")
        t.lookup_start = &cat_lookup_start[0] if n_features else NULL
        t.lookup_size = &cat_lookup_size[0] if n_features else NULL
        if cat_lookup.shape[0] > 0:
            t.lookup = &cat_lookup[0]
    if cat_values is None or cat_bitsets is None:
        raise ValueError("categorical predictions need cat_values and cat_bitsets")
    if cat_offsets[cat_offsets.shape[0] - 1] > cat_values.shape[0]:
        raise ValueError("cat_offsets run past cat_values")
    t.offsets = &cat_offsets[0]
    if cat_values.shape[0] > 0:
        t.values = &cat_values[0]
    if cat_bitsets.shape[0] > 0:
        t.bitsets = &cat_bitsets[0]
    return t


cdef inline unsigned int _raw_goes_right(const cat_tables* cat, unsigned int feature,
                                         double split, X_DTYPE_C x) noexcept nogil:
    """Whether a non-NaN raw value leaves a categorical split to the right:
    it is not a kept category whose bin is in the split's set."""
    cdef long long lo = cat.offsets[feature], hi = cat.offsets[feature + 1], mid
    cdef long long first = lo
    cdef long long b, size
    cdef const unsigned int* words
    if cat.lookup_size != NULL and cat.lookup_size[feature] >= 0:
        # integer categories: the bin straight from the table; any other
        # value (out of range, not an integer) is not a kept category
        size = cat.lookup_size[feature]
        if not (0 <= x < size):
            return 1
        b = <long long>x
        if b != x:
            return 1
        b = cat.lookup[cat.lookup_start[feature] + b]
        if b == NOT_KEPT:
            return 1
        words = cat.bitsets + BITSET_WORDS * <Py_ssize_t>split
        return ((words[b >> 5] >> (b & 31)) & 1) ^ 1
    # the bin of a raw category: its position among the kept (sorted) ones
    while lo < hi:
        mid = (lo + hi) >> 1
        if cat.values[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    if lo < cat.offsets[feature + 1] and cat.values[lo] == x:
        b = lo - first
        words = cat.bitsets + BITSET_WORDS * <Py_ssize_t>split
        return ((words[b >> 5] >> (b & 31)) & 1) ^ 1
    return 1


cdef inline unsigned int _step(const packed_node* P, unsigned int n, const X_DTYPE_C* x,
                               const cat_tables* cat) noexcept nogil:
    """One level down from packed node ``n`` for the row ``x``."""
    cdef const packed_node* nd = &P[n]
    cdef unsigned int info = nd.info
    cdef X_DTYPE_C v = x[info & FEATURE_MASK]
    if (info & CAT_BIT) and v == v:
        return nd.left + _raw_goes_right(cat, info & FEATURE_MASK, nd.threshold, v)
    # NaN compares false: it goes right exactly when its direction is right
    return nd.left + ((v > nd.threshold) | ((v != v) & (info >> MISSING_RIGHT_SHIFT)))


cdef inline unsigned int _step_finite_cat(const packed_node* P, unsigned int n,
                                          const X_DTYPE_C* x,
                                          const cat_tables* cat) noexcept nogil:
    """:func:`_step` of a row without NaN."""
    cdef const packed_node* nd = &P[n]
    cdef unsigned int info = nd.info
    cdef X_DTYPE_C v = x[info & FEATURE_MASK]
    if info & CAT_BIT:
        return nd.left + _raw_goes_right(cat, info & FEATURE_MASK, nd.threshold, v)
    return nd.left + (v > nd.threshold)


cdef inline unsigned int _step_numeric(const packed_node* P, unsigned int n,
                                       const X_DTYPE_C* x) noexcept nogil:
    """:func:`_step` of a model without categorical splits."""
    cdef const packed_node* nd = &P[n]
    cdef unsigned int info = nd.info
    cdef X_DTYPE_C v = x[info & FEATURE_MASK]
    return nd.left + ((v > nd.threshold) | ((v != v) & (info >> MISSING_RIGHT_SHIFT)))


cdef inline unsigned int _step_finite(const packed_node* P, unsigned int n,
                                      const X_DTYPE_C* x) noexcept nogil:
    """:func:`_step_numeric` of a row without NaN."""
    cdef const packed_node* nd = &P[n]
    return nd.left + (x[nd.info & FEATURE_MASK] > nd.threshold)


cdef inline Py_ssize_t _order_rows(const X_DTYPE_C* X, Py_ssize_t stride, Py_ssize_t n_rows,
                                   int* rows, int* has_inf) noexcept nogil:
    """Rows of the block, those without NaN first; returns how many those are.
    Sets ``has_inf[0]`` if a value is +-inf (the scan reads every value
    anyway, so the estimators' finite check costs no separate pass)."""
    cdef Py_ssize_t i, j, n_finite = 0, n_nan = 0
    cdef bint nan, inf = 0
    cdef X_DTYPE_C v
    for i in range(n_rows):
        nan = 0
        for j in range(stride):
            v = X[i * stride + j]
            nan |= v != v
            inf |= (v == INFINITY) | (v == -INFINITY)
        if not nan:
            rows[n_finite] = <int>i
            n_finite += 1
    if inf:
        has_inf[0] = 1
    for i in range(n_rows):
        nan = 0
        for j in range(stride):
            nan |= X[i * stride + j] != X[i * stride + j]
        if nan:
            rows[n_finite + n_nan] = <int>i
            n_nan += 1
    return n_finite


cdef inline void _walk(const packed_node* P, unsigned int root, int depth,
                       const X_DTYPE_C* X, Py_ssize_t stride, const int* rows,
                       Py_ssize_t n_finite, Py_ssize_t n_rows, unsigned int* idx,
                       int* active, const cat_tables* cat) noexcept nogil:
    """``idx[j]``: the leaf row ``rows[j]`` of the block reaches. All rows
    take ``depth`` steps in lockstep (the first ``n_finite`` rows have no NaN,
    so their steps skip the missing-value test); then the rows not yet at a
    leaf step on, the list of those still walking rebuilt after each level
    without a branch. Children come after their parent, so this ends."""
    cdef Py_ssize_t j, a, n_active
    cdef int level
    cdef unsigned int nxt
    _lockstep(P, root, depth, X, stride, rows, n_finite, n_rows, idx, cat)
    n_active = 0
    for j in range(n_rows):
        active[n_active] = <int>j
        n_active += P[idx[j]].left != idx[j]
    while n_active > 0:
        a = n_active
        n_active = 0
        for j in range(a):
            nxt = _step(P, idx[active[j]], X + rows[active[j]] * stride, cat)
            idx[active[j]] = nxt
            active[n_active] = active[j]
            n_active += P[nxt].left != nxt


cdef inline void _lockstep(const packed_node* P, unsigned int root, int depth,
                           const X_DTYPE_C* X, Py_ssize_t stride, const int* rows,
                           Py_ssize_t n_finite, Py_ssize_t n_rows, unsigned int* idx,
                           const cat_tables* cat) noexcept nogil:
    cdef Py_ssize_t j
    cdef int level
    for j in range(n_rows):
        idx[j] = root
    if cat.offsets == NULL and n_finite == n_rows:  # rows[j] == j
        for level in range(depth):
            for j in range(n_rows):
                idx[j] = _step_finite(P, idx[j], X + j * stride)
    elif cat.offsets == NULL:
        for level in range(depth):
            for j in range(n_finite):
                idx[j] = _step_finite(P, idx[j], X + rows[j] * stride)
            for j in range(n_finite, n_rows):
                idx[j] = _step_numeric(P, idx[j], X + rows[j] * stride)
    else:
        for level in range(depth):
            for j in range(n_finite):
                idx[j] = _step_finite_cat(P, idx[j], X + rows[j] * stride, cat)
            for j in range(n_finite, n_rows):
                idx[j] = _step(P, idx[j], X + rows[j] * stride, cat)


cdef void _predict_block(const packed_node* P, const Y_DTYPE_C* values,
                         const long long* roots, const int* depths,
                         const long long* trees, const Y_DTYPE_C* factors,
                         Py_ssize_t n_use, int K,
                         const X_DTYPE_C* X, Py_ssize_t stride, Py_ssize_t n_rows,
                         Y_DTYPE_C* out, unsigned int* idx, int* rows, int* active,
                         Y_DTYPE_C* acc, const cat_tables* cat, int* has_inf) noexcept nogil:
    cdef Py_ssize_t j, u, t
    cdef int k
    cdef Y_DTYPE_C f
    cdef Py_ssize_t n_finite = _order_rows(X, stride, n_rows, rows, has_inf)
    for j in range(n_rows * K):
        acc[j] = out[j]
    for u in range(n_use):
        t = trees[u]
        _walk(P, <unsigned int>roots[t], depths[t], X, stride, rows, n_finite, n_rows, idx,
              active, cat)
        f = factors[u]
        k = t % K
        for j in range(n_rows):
            acc[rows[j] * K + k] += f * values[idx[j]]
    for j in range(n_rows * K):
        out[j] = acc[j]


cdef _check_packed(const packed_node[::1] packed, Py_ssize_t n_other,
                   const long long[::1] roots, const int[::1] depths,
                   const long long[::1] trees, const cat_tables* cat):
    cdef Py_ssize_t u
    cdef unsigned int any_cat = 0
    if n_other != packed.shape[0] or depths.shape[0] != roots.shape[0]:
        raise ValueError("packed layout arrays do not match")
    if cat.offsets == NULL:
        for u in range(packed.shape[0]):
            any_cat |= packed[u].info & CAT_BIT
        if any_cat:
            raise ValueError("the trees have categorical splits: pass the categorical tables")
    for u in range(trees.shape[0]):
        if not 0 <= trees[u] < roots.shape[0]:
            raise ValueError(f"tree index {trees[u]} is not in the model")


def predict_raw(const packed_node[::1] packed, const Y_DTYPE_C[::1] values,
                const long long[::1] roots, const int[::1] depths,
                const long long[::1] trees, const Y_DTYPE_C[::1] factors,
                int n_trees_per_iteration, const X_DTYPE_C[:, ::1] X, int n_threads,
                Y_DTYPE_C[:, ::1] out,
                const X_DTYPE_C[::1] cat_values=None, const long long[::1] cat_offsets=None,
                const unsigned int[::1] cat_bitsets=None,
                const unsigned char[::1] cat_lookup=None,
                const long long[::1] cat_lookup_start=None,
                const long long[::1] cat_lookup_size=None):
    """``out[i, t % K] += factors[u] * tree_t(X[i])`` for ``t = trees[u]``, in
    the order of ``trees`` (a tree may appear more than once).

    ``packed, values, roots, depths`` come from :func:`pack_trees`. Pass the
    categorical tables when the model has categorical splits (the lookup
    tables of :func:`category_lookup` are optional: without them every
    category is found by binary search).

    Returns whether ``X`` holds +-inf (such rows are predicted all the same:
    infinity compares with thresholds like any number).
    """
    cdef Py_ssize_t n_samples = X.shape[0]
    cdef int K = n_trees_per_iteration
    if out.shape[0] != n_samples or out.shape[1] != K or K < 1:
        raise ValueError("out must have shape (n_samples, n_trees_per_iteration)")
    if factors.shape[0] != trees.shape[0]:
        raise ValueError("one factor per tree")
    cdef cat_tables cat = _tables(cat_values, cat_offsets, cat_bitsets, cat_lookup,
                                  cat_lookup_start, cat_lookup_size)
    _check_packed(packed, values.shape[0], roots, depths, trees, &cat)
    if n_samples == 0 or trees.shape[0] == 0:
        return _has_inf(X)
    cdef Py_ssize_t block = BLOCK_ROWS
    cdef Py_ssize_t n_blocks = (n_samples + block - 1) // block
    cdef Py_ssize_t stride = X.shape[1]
    cdef Py_ssize_t blk, row0, n_rows
    cdef int has_inf = 0
    n_threads = max(1, min(n_threads, n_blocks))
    # per-thread scratch: the block's current nodes and running scores
    cdef unsigned int[:, ::1] idx = np.empty((n_threads, block), dtype=np.uint32)
    cdef int[:, ::1] rows = np.empty((n_threads, block), dtype=np.int32)
    cdef int[:, ::1] active = np.empty((n_threads, block), dtype=np.int32)
    cdef Y_DTYPE_C[:, ::1] acc = np.empty((n_threads, block * K), dtype=np.float64)
    for blk in prange(n_blocks, schedule='dynamic', chunksize=4, nogil=True,
                     num_threads=n_threads):
        row0 = blk * block
        n_rows = n_samples - row0
        if n_rows > block:
            n_rows = block
        _predict_block(&packed[0], &values[0], &roots[0], &depths[0], &trees[0],
                       &factors[0], trees.shape[0], K, &X[row0, 0], stride, n_rows,
                       &out[row0, 0], &idx[threadid(), 0], &rows[threadid(), 0],
                       &active[threadid(), 0], &acc[threadid(), 0], &cat, &has_inf)
    return bool(has_inf)


cdef bint _has_inf(const X_DTYPE_C[:, ::1] X):
    cdef Py_ssize_t i, j
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            if X[i, j] == INFINITY or X[i, j] == -INFINITY:
                return True
    return False


def predict_leaves(const packed_node[::1] packed, const unsigned int[::1] node_ids,
                   const long long[::1] roots, const int[::1] depths,
                   const long long[::1] trees, const X_DTYPE_C[:, ::1] X, int n_threads,
                   unsigned int[:, ::1] out,
                   const X_DTYPE_C[::1] cat_values=None, const long long[::1] cat_offsets=None,
                   const unsigned int[::1] cat_bitsets=None,
                   const unsigned char[::1] cat_lookup=None,
                   const long long[::1] cat_lookup_start=None,
                   const long long[::1] cat_lookup_size=None):
    """``out[i, u]``: index within tree ``trees[u]`` of the leaf row ``i`` reaches."""
    cdef Py_ssize_t n_samples = X.shape[0]
    cdef Py_ssize_t n_use = trees.shape[0]
    if out.shape[0] != n_samples or out.shape[1] != n_use:
        raise ValueError("out must have shape (n_samples, len(trees))")
    cdef cat_tables cat = _tables(cat_values, cat_offsets, cat_bitsets, cat_lookup,
                                  cat_lookup_start, cat_lookup_size)
    _check_packed(packed, node_ids.shape[0], roots, depths, trees, &cat)
    if n_samples == 0 or n_use == 0:
        return
    cdef Py_ssize_t block = BLOCK_ROWS
    cdef Py_ssize_t n_blocks = (n_samples + block - 1) // block
    cdef Py_ssize_t stride = X.shape[1]
    cdef Py_ssize_t blk, row0, n_rows, i, v, t
    cdef unsigned int* rows_idx
    cdef int* block_rows
    cdef Py_ssize_t n_finite
    cdef int has_inf = 0  # predict_leaves does not report it
    n_threads = max(1, min(n_threads, n_blocks))
    cdef unsigned int[:, ::1] idx = np.empty((n_threads, block), dtype=np.uint32)
    cdef int[:, ::1] rows = np.empty((n_threads, block), dtype=np.int32)
    cdef int[:, ::1] active = np.empty((n_threads, block), dtype=np.int32)
    for blk in prange(n_blocks, schedule='dynamic', chunksize=4, nogil=True,
                     num_threads=n_threads):
        row0 = blk * block
        n_rows = n_samples - row0
        if n_rows > block:
            n_rows = block
        rows_idx = &idx[threadid(), 0]
        block_rows = &rows[threadid(), 0]
        n_finite = _order_rows(&X[row0, 0], stride, n_rows, block_rows, &has_inf)
        for v in range(n_use):
            t = trees[v]
            _walk(&packed[0], <unsigned int>roots[t], depths[t], &X[row0, 0], stride,
                  block_rows, n_finite, n_rows, rows_idx, &active[threadid(), 0], &cat)
            for i in range(n_rows):
                out[row0 + block_rows[i], v] = node_ids[rows_idx[i]]

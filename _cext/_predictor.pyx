"""Tree traversal on raw and binned data, and score updates from leaf indices."""
from cython.parallel import prange

from _common cimport (X_DTYPE_C, X_BINNED_DTYPE_C, Y_DTYPE_C, node_struct)


cdef inline Py_ssize_t _leaf_raw(const node_struct[::1] nodes, Py_ssize_t root,
                                 const X_DTYPE_C[:, ::1] X, Py_ssize_t row) noexcept nogil:
    cdef Py_ssize_t node = root
    cdef X_DTYPE_C x
    while not nodes[node].is_leaf:
        x = X[row, nodes[node].feature_idx]
        if x != x:
            if nodes[node].missing_go_to_left:
                node = root + nodes[node].left
            else:
                node = root + nodes[node].right
        elif x <= nodes[node].num_threshold:
            node = root + nodes[node].left
        else:
            node = root + nodes[node].right
    return node


cdef inline Py_ssize_t _leaf_binned(const node_struct[::1] nodes,
                                    const X_BINNED_DTYPE_C[::1, :] X_binned, Py_ssize_t row,
                                    X_BINNED_DTYPE_C missing_bin_idx) noexcept nogil:
    cdef Py_ssize_t node = 0
    cdef X_BINNED_DTYPE_C b
    while not nodes[node].is_leaf:
        b = X_binned[row, nodes[node].feature_idx]
        if b == missing_bin_idx:
            if nodes[node].missing_go_to_left:
                node = nodes[node].left
            else:
                node = nodes[node].right
        elif b <= nodes[node].bin_threshold:
            node = nodes[node].left
        else:
            node = nodes[node].right
    return node


def predict_raw(const node_struct[::1] nodes,
                const long long[::1] tree_offsets,
                const Y_DTYPE_C[::1] tree_weights,
                int n_trees_per_iteration,
                const X_DTYPE_C[:, ::1] X,
                int n_threads,
                Y_DTYPE_C[:, ::1] out):
    """``out[i, t % K] += tree_weights[t] * tree_t(X[i])`` for all trees ``t``.

    ``nodes`` holds every tree's nodes back to back; tree ``t`` starts at
    ``tree_offsets[t]``. Rows are processed in blocks (in parallel): within a
    block each tree walks all the block's rows, so the tree's nodes stay in
    L1 cache. Each row still adds the trees in order, so the sum (and its
    rounding) does not depend on the blocking or the number of threads.
    """
    cdef:
        Py_ssize_t n_samples = X.shape[0]
        Py_ssize_t n_trees = tree_offsets.shape[0] - 1
        Py_ssize_t block = 64
        Py_ssize_t n_blocks = (n_samples + block - 1) // block
        Py_ssize_t blk, i, t, leaf, row_start, row_stop
        int K = n_trees_per_iteration
    for blk in prange(n_blocks, schedule='static', nogil=True, num_threads=n_threads):
        row_start = blk * block
        row_stop = row_start + block
        if row_stop > n_samples:
            row_stop = n_samples
        for t in range(n_trees):
            for i in range(row_start, row_stop):
                leaf = _leaf_raw(nodes, tree_offsets[t], X, i)
                out[i, t % K] += tree_weights[t] * nodes[leaf].value


def predict_leaves_raw(const node_struct[::1] nodes,
                       const long long[::1] tree_offsets,
                       const X_DTYPE_C[:, ::1] X,
                       int n_threads,
                       unsigned int[:, ::1] out):
    """``out[i, t]``: index (within tree ``t``) of the leaf row ``i`` reaches."""
    cdef:
        Py_ssize_t n_samples = X.shape[0]
        Py_ssize_t n_trees = tree_offsets.shape[0] - 1
        Py_ssize_t i, t
    for i in prange(n_samples, schedule='static', nogil=True, num_threads=n_threads):
        for t in range(n_trees):
            out[i, t] = <unsigned int>(_leaf_raw(nodes, tree_offsets[t], X, i) - tree_offsets[t])


def tree_leaf_ids_binned(const node_struct[::1] nodes,
                         const X_BINNED_DTYPE_C[::1, :] X_binned,
                         X_BINNED_DTYPE_C missing_bin_idx,
                         const unsigned char[::1] node_to_leaf,
                         int n_threads,
                         unsigned char[::1] out):
    """Leaf id (``node_to_leaf[node]``) of every binned row for one tree."""
    cdef Py_ssize_t i
    for i in prange(X_binned.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        out[i] = node_to_leaf[_leaf_binned(nodes, X_binned, i, missing_bin_idx)]


def add_tree_binned(const node_struct[::1] nodes,
                    const X_BINNED_DTYPE_C[::1, :] X_binned,
                    X_BINNED_DTYPE_C missing_bin_idx,
                    Y_DTYPE_C factor,
                    int n_threads,
                    Y_DTYPE_C[::1] scores):
    """``scores += factor * tree(X_binned)`` by traversal (the fallback path
    when leaf ids of the rows are not cached)."""
    cdef Py_ssize_t i
    for i in prange(X_binned.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        scores[i] += factor * nodes[_leaf_binned(nodes, X_binned, i, missing_bin_idx)].value


def add_leaf_values(const unsigned char[::1] leaf_ids,
                    const Y_DTYPE_C[::1] leaf_values,
                    Y_DTYPE_C factor,
                    int n_threads,
                    Y_DTYPE_C[::1] scores):
    """``scores += factor * leaf_values[leaf_ids]``: a tree's contribution to
    rows whose leaves are cached, as a gather instead of a traversal."""
    cdef Py_ssize_t i
    for i in prange(leaf_ids.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        scores[i] += factor * leaf_values[leaf_ids[i]]


def set_leaf_ids(const unsigned int[::1] partition,
                 const long long[::1] leaf_starts,
                 const long long[::1] leaf_stops,
                 unsigned char[::1] out):
    """``out[partition[start:stop]] = leaf`` for each leaf's slice of the
    grower's row partition: leaf ids of the training rows without traversal."""
    cdef Py_ssize_t leaf, j
    with nogil:
        for leaf in range(leaf_starts.shape[0]):
            for j in range(leaf_starts[leaf], leaf_stops[leaf]):
                out[partition[j]] = <unsigned char>leaf

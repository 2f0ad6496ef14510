"""Tree traversal on binned data, and score updates from leaf indices (the
fit's kernels; prediction on raw values is ``_packed_predictor.pyx``).

A split on a categorical feature (``is_categorical[feature]``) is a set
split: its node's ``num_threshold`` holds the row of its bitset in
``cat_bitsets`` (8 uint32 words per split, one bit per bin). A binned value
``b`` goes left when bit ``b`` is set. NaN follows ``missing_go_to_left``.
"""
from cython.parallel import prange

from _common cimport (X_DTYPE_C, X_BINNED_DTYPE_C, Y_DTYPE_C, node_struct)

include "_entry_bins.pxi"


cdef struct cat_tables:
    const unsigned char* is_cat
    const X_DTYPE_C* values
    const long long* offsets
    const unsigned int* bitsets


cdef cat_tables _binned_tables(const unsigned char[::1] is_categorical,
                               const unsigned int[::1] cat_bitsets):
    """The tables binned traversal needs (no category values)."""
    cdef cat_tables t
    t.is_cat = NULL
    t.values = NULL
    t.offsets = NULL
    t.bitsets = NULL
    if is_categorical is None or is_categorical.shape[0] == 0:
        return t
    if cat_bitsets is None:
        raise ValueError("categorical traversal needs cat_bitsets")
    t.is_cat = &is_categorical[0]
    if cat_bitsets.shape[0] > 0:
        t.bitsets = &cat_bitsets[0]
    return t


cdef inline bint _is_cat_split(const cat_tables* cat, int feature) noexcept nogil:
    return cat.is_cat != NULL and cat.is_cat[feature] != 0


cdef inline bint _bin_in_set(const cat_tables* cat, X_DTYPE_C split,
                             Py_ssize_t b) noexcept nogil:
    cdef const unsigned int* words = cat.bitsets + 8 * <Py_ssize_t>split
    return (words[b >> 5] >> (b & 31)) & 1


cdef inline Py_ssize_t _child(const node_struct[::1] nodes, Py_ssize_t node,
                              X_BINNED_DTYPE_C b, X_BINNED_DTYPE_C missing_bin_idx,
                              const cat_tables* cat) noexcept nogil:
    """The child of split ``node`` that a row with bin ``b`` of its feature goes to."""
    cdef bint left
    if b == missing_bin_idx:
        left = nodes[node].missing_go_to_left
    elif _is_cat_split(cat, nodes[node].feature_idx):
        left = _bin_in_set(cat, nodes[node].num_threshold, b)
    else:
        left = b <= nodes[node].bin_threshold
    return nodes[node].left if left else nodes[node].right


cdef inline Py_ssize_t _leaf_binned(const node_struct[::1] nodes,
                                    const X_BINNED_DTYPE_C[::1, :] X_binned, Py_ssize_t row,
                                    X_BINNED_DTYPE_C missing_bin_idx,
                                    const cat_tables* cat) noexcept nogil:
    cdef Py_ssize_t node = 0
    while not nodes[node].is_leaf:
        node = _child(nodes, node, X_binned[row, nodes[node].feature_idx], missing_bin_idx,
                      cat)
    return node


cdef struct split_matrix:
    # a binned matrix kept as dense columns plus entries (SparseBinned)
    const X_BINNED_DTYPE_C* dense     # column c of row r: dense[r + c * n_rows]
    Py_ssize_t n_rows
    const int* column_of              # per feature: its column, -1: from entries
    entry_table entries


cdef split_matrix _split_matrix(const X_BINNED_DTYPE_C[::1, :] dense,
                                const int[::1] column_of, const Py_ssize_t[::1] row_ptr,
                                const unsigned int[::1] records,
                                const Py_ssize_t[::1] offsets,
                                const X_BINNED_DTYPE_C[::1] default_bin,
                                X_BINNED_DTYPE_C missing_bin_idx) except *:
    cdef split_matrix m
    cdef Py_ssize_t n_features = column_of.shape[0]
    if (offsets.shape[0] != n_features + 1 or default_bin.shape[0] != n_features
            or row_ptr.shape[0] != dense.shape[0] + 1
            or row_ptr[dense.shape[0]] != records.shape[0]):
        raise ValueError("the entries' tables do not match the matrix")
    m.dense = &dense[0, 0] if dense.shape[1] > 0 else NULL
    m.n_rows = dense.shape[0]
    m.column_of = &column_of[0] if n_features > 0 else NULL
    m.entries.row_ptr = &row_ptr[0]
    m.entries.records = &records[0] if records.shape[0] > 0 else NULL
    m.entries.offsets = &offsets[0]
    m.entries.default_bin = &default_bin[0] if n_features > 0 else NULL
    m.entries.missing_bin_idx = missing_bin_idx
    m.entries.col_ptr = NULL
    m.entries.col_rows = NULL
    return m


cdef inline Py_ssize_t _leaf_split(const node_struct[::1] nodes, const split_matrix* m,
                                   Py_ssize_t row, X_BINNED_DTYPE_C missing_bin_idx,
                                   const cat_tables* cat) noexcept nogil:
    """``_leaf_binned`` on a :class:`SparseBinned` matrix."""
    cdef Py_ssize_t node = 0, f
    cdef int c
    cdef X_BINNED_DTYPE_C b
    while not nodes[node].is_leaf:
        f = nodes[node].feature_idx
        c = m.column_of[f]
        b = m.dense[row + c * m.n_rows] if c >= 0 else _entry_bin(&m.entries, row, f)
        node = _child(nodes, node, b, missing_bin_idx, cat)
    return node


def tree_leaf_ids_split(const node_struct[::1] nodes,
                        const X_BINNED_DTYPE_C[::1, :] dense,
                        const int[::1] column_of,
                        const Py_ssize_t[::1] row_ptr,
                        const unsigned int[::1] records,
                        const Py_ssize_t[::1] offsets,
                        const X_BINNED_DTYPE_C[::1] default_bin,
                        X_BINNED_DTYPE_C missing_bin_idx,
                        const unsigned char[::1] node_to_leaf,
                        int n_threads,
                        unsigned char[::1] out,
                        const unsigned char[::1] is_categorical=None,
                        const unsigned int[::1] cat_bitsets=None):
    """:func:`tree_leaf_ids_binned` of a matrix kept as its dense features'
    columns ``dense`` plus the other features' entries
    (``dartboost._sparse_columns.SparseBinned``)."""
    cdef Py_ssize_t i
    cdef cat_tables cat = _binned_tables(is_categorical, cat_bitsets)
    cdef split_matrix m = _split_matrix(dense, column_of, row_ptr, records, offsets,
                                        default_bin, missing_bin_idx)
    if out.shape[0] != m.n_rows:
        raise ValueError("out needs one entry per row")
    for i in prange(m.n_rows, schedule='static', nogil=True, num_threads=n_threads):
        out[i] = node_to_leaf[_leaf_split(nodes, &m, i, missing_bin_idx, &cat)]


def add_tree_split(const node_struct[::1] nodes,
                   const X_BINNED_DTYPE_C[::1, :] dense,
                   const int[::1] column_of,
                   const Py_ssize_t[::1] row_ptr,
                   const unsigned int[::1] records,
                   const Py_ssize_t[::1] offsets,
                   const X_BINNED_DTYPE_C[::1] default_bin,
                   X_BINNED_DTYPE_C missing_bin_idx,
                   Y_DTYPE_C factor,
                   int n_threads,
                   Y_DTYPE_C[::1] scores,
                   const unsigned char[::1] is_categorical=None,
                   const unsigned int[::1] cat_bitsets=None):
    """:func:`add_tree_binned` of a matrix kept as dense columns plus
    entries (see :func:`tree_leaf_ids_split`)."""
    cdef Py_ssize_t i
    cdef cat_tables cat = _binned_tables(is_categorical, cat_bitsets)
    cdef split_matrix m = _split_matrix(dense, column_of, row_ptr, records, offsets,
                                        default_bin, missing_bin_idx)
    if scores.shape[0] != m.n_rows:
        raise ValueError("scores needs one entry per row")
    for i in prange(m.n_rows, schedule='static', nogil=True, num_threads=n_threads):
        scores[i] += factor * nodes[_leaf_split(nodes, &m, i, missing_bin_idx, &cat)].value


def tree_leaf_ids_binned(const node_struct[::1] nodes,
                         const X_BINNED_DTYPE_C[::1, :] X_binned,
                         X_BINNED_DTYPE_C missing_bin_idx,
                         const unsigned char[::1] node_to_leaf,
                         int n_threads,
                         unsigned char[::1] out,
                         const unsigned char[::1] is_categorical=None,
                         const unsigned int[::1] cat_bitsets=None):
    """Leaf id (``node_to_leaf[node]``) of every binned row for one tree."""
    cdef Py_ssize_t i
    cdef cat_tables cat = _binned_tables(is_categorical, cat_bitsets)
    for i in prange(X_binned.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        out[i] = node_to_leaf[_leaf_binned(nodes, X_binned, i, missing_bin_idx, &cat)]


def add_tree_binned(const node_struct[::1] nodes,
                    const X_BINNED_DTYPE_C[::1, :] X_binned,
                    X_BINNED_DTYPE_C missing_bin_idx,
                    Y_DTYPE_C factor,
                    int n_threads,
                    Y_DTYPE_C[::1] scores,
                    const unsigned char[::1] is_categorical=None,
                    const unsigned int[::1] cat_bitsets=None):
    """``scores += factor * tree(X_binned)`` by traversal (the fallback path
    when leaf ids of the rows are not cached)."""
    cdef Py_ssize_t i
    cdef cat_tables cat = _binned_tables(is_categorical, cat_bitsets)
    for i in prange(X_binned.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        scores[i] += factor * nodes[_leaf_binned(nodes, X_binned, i, missing_bin_idx, &cat)].value


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
                 unsigned char[::1] out,
                 int n_threads=1):
    """``out[partition[start:stop]] = leaf`` for each leaf's slice of the
    grower's row partition: leaf ids of the training rows without traversal.
    (Leaves' slices hold disjoint rows, so leaves run in parallel.)"""
    cdef Py_ssize_t leaf, j
    for leaf in prange(leaf_starts.shape[0], schedule='dynamic', nogil=True,
                       num_threads=n_threads):
        for j in range(leaf_starts[leaf], leaf_stops[leaf]):
            out[partition[j]] = <unsigned char>leaf

"""Gradient/hessian histograms of a node's rows, and the subtraction trick.

Work is split into tasks of (row chunk, feature tile) so that both many rows
(row-parallel, one partial histogram per chunk) and many features
(feature-parallel) keep every thread busy. The chunking depends only on the
node's size and the histogram's shape, never on the thread count, and the
chunks' partial histograms are added in chunk order: the sums, hence the
trees, are the same for any number of threads.
"""
from cython.parallel import prange

import numpy as np

from _common cimport X_BINNED_DTYPE_C, Y_DTYPE_C, G_H_DTYPE_C, hist_struct

cdef enum:
    # Rows per chunk of a node; a node with fewer rows is one chunk. Small
    # enough that a node of some 10^5 rows gives many threads work, large
    # enough that zeroing and adding a chunk's partial histogram (n_bins per
    # feature) costs a few percent of filling it (CHUNK_ROWS per feature).
    CHUNK_ROWS = 16384
    # Features read together in one pass over a chunk's rows: each row's
    # gradient, hessian and index are loaded once per tile, and the tile's
    # histogram updates are independent chains the CPU overlaps.
    TILE = 4


#: Python view of the chunk size (tests, docs).
ROWS_PER_CHUNK = CHUNK_ROWS


def n_chunks_for(Py_ssize_t n_rows, Py_ssize_t max_chunks):
    """Row chunks of a node of ``n_rows`` rows, given room for ``max_chunks``
    partial histograms (1 means: fill the histogram directly)."""
    return _n_chunks(n_rows, max_chunks)


cdef inline Py_ssize_t _n_chunks(Py_ssize_t n_rows, Py_ssize_t max_chunks) noexcept nogil:
    cdef Py_ssize_t c = (n_rows + CHUNK_ROWS - 1) // CHUNK_ROWS
    if c > max_chunks:
        c = max_chunks
    return c if c > 1 else 1


cdef void _fill_tile(const X_BINNED_DTYPE_C[::1, :] X_binned,
                     const unsigned int* rows,
                     const G_H_DTYPE_C* g, const G_H_DTYPE_C* h,
                     Py_ssize_t start, Py_ssize_t stop,
                     const int* features, int n_tile,
                     hist_struct** out, Py_ssize_t n_bins,
                     bint hessians_are_constant, Y_DTYPE_C h0,
                     bint final) noexcept nogil:
    """Zero then fill ``out[t][:n_bins]`` with feature ``features[t]``'s sums
    over the rows ``rows[start:stop]`` (``start:stop`` when ``rows`` is NULL).

    Gradients are read at the rows themselves: a node's rows are ascending
    (the partition is stable), so this is a forward walk the prefetcher
    follows, and no gathered copy is needed. With constant hessians only
    gradients and counts are summed; ``final`` (the tile is the whole
    histogram, not a chunk's partial) then sets ``sum_hessians = count * h0``.
    """
    cdef const X_BINNED_DTYPE_C* col[TILE]
    cdef Py_ssize_t i, b
    cdef int t
    cdef unsigned int row
    cdef Y_DTYPE_C gi, hi
    cdef hist_struct* bin_
    for t in range(n_tile):
        col[t] = &X_binned[0, features[t]]
        for b in range(n_bins):
            out[t][b].sum_gradients = 0.
            out[t][b].sum_hessians = 0.
            out[t][b].count = 0
    for i in range(start, stop):
        row = rows[i] if rows != NULL else <unsigned int>i
        gi = g[row]
        if hessians_are_constant:
            for t in range(n_tile):
                bin_ = &out[t][col[t][row]]
                bin_.sum_gradients += gi
                bin_.count += 1
        else:
            hi = h[row]
            for t in range(n_tile):
                bin_ = &out[t][col[t][row]]
                bin_.sum_gradients += gi
                bin_.sum_hessians += hi
                bin_.count += 1
    if hessians_are_constant and final:
        for t in range(n_tile):
            for b in range(n_bins):
                out[t][b].sum_hessians = out[t][b].count * h0


cdef void _run_task(const X_BINNED_DTYPE_C[::1, :] X_binned, const unsigned int* rows,
                    const G_H_DTYPE_C* g, const G_H_DTYPE_C* h, Py_ssize_t n,
                    Py_ssize_t task, Py_ssize_t n_chunks, Py_ssize_t chunk_len,
                    const int* active, Py_ssize_t n_active, Py_ssize_t n_features,
                    Py_ssize_t n_bins, hist_struct* hist_base, hist_struct* partial_base,
                    bint hessians_are_constant, Y_DTYPE_C h0) noexcept nogil:
    """Task ``task``: chunk ``task % n_chunks`` of the rows, tile
    ``task // n_chunks`` of the active features (its own stack arrays, so
    parallel tasks share nothing but read-only inputs and disjoint outputs)."""
    cdef int tile_features[TILE]
    cdef hist_struct* tile_out[TILE]
    cdef int n_tile = 0
    cdef Py_ssize_t c = task % n_chunks
    cdef Py_ssize_t first = (task // n_chunks) * TILE
    cdef Py_ssize_t j
    cdef Py_ssize_t start = c * chunk_len
    cdef Py_ssize_t stop = start + chunk_len
    if stop > n:
        stop = n
    if start > stop:
        start = stop
    for j in range(first, first + TILE):
        if j < n_active:
            tile_features[n_tile] = active[j]
            if n_chunks == 1:
                tile_out[n_tile] = hist_base + active[j] * n_bins
            else:
                tile_out[n_tile] = partial_base + (c * n_features + active[j]) * n_bins
            n_tile += 1
    _fill_tile(X_binned, rows, g, h, start, stop, tile_features, n_tile, tile_out, n_bins,
               hessians_are_constant, h0, n_chunks == 1)


def build_histogram(const X_BINNED_DTYPE_C[::1, :] X_binned,
                    const unsigned int[::1] sample_indices,
                    const G_H_DTYPE_C[::1] gradients,
                    const G_H_DTYPE_C[::1] hessians,
                    const unsigned char[::1] feature_mask,
                    bint all_rows,
                    bint hessians_are_constant,
                    int n_threads,
                    hist_struct[:, ::1] hist,
                    hist_struct[:, :, ::1] partial=None):
    """Fill ``hist[f]`` for every feature with ``feature_mask[f]``.

    ``sample_indices`` are the node's rows, ascending; with ``all_rows`` the
    node holds every row in order (``sample_indices`` is then only its
    length). ``partial`` (shape ``(max_chunks, n_features, n_bins)``) is
    scratch for the per-chunk histograms of large nodes; without it (or with
    room for one chunk) every feature is filled in one pass. One parallel
    region, plus one to add the chunks' partials when there are several.
    """
    cdef:
        Py_ssize_t n = sample_indices.shape[0]
        Py_ssize_t n_features = X_binned.shape[1]
        Py_ssize_t n_bins = hist.shape[1]
        Py_ssize_t max_chunks = partial.shape[0] if partial is not None else 1
        Py_ssize_t n_chunks = _n_chunks(n, max_chunks)
        Py_ssize_t chunk_len = (n + n_chunks - 1) // n_chunks
        Py_ssize_t i, f, b, c, task
        Py_ssize_t n_active, n_tiles, n_tasks
        hist_struct* hist_base = &hist[0, 0]
        hist_struct* partial_base = NULL
        hist_struct* src
        hist_struct* dst
        const unsigned int* rows = NULL if all_rows or n == 0 else &sample_indices[0]
        Y_DTYPE_C h0 = hessians[0] if hessians.shape[0] > 0 else 0.
        Y_DTYPE_C sg, sh
        unsigned int cnt
        int[::1] active

    if hist.shape[0] != n_features:
        raise ValueError(f"hist has {hist.shape[0]} features, X_binned {n_features}.")
    if partial is not None and (partial.shape[1] != n_features or partial.shape[2] != n_bins):
        raise ValueError(f"partial has shape {tuple(partial.shape)[:3]}; expected "
                         f"(max_chunks, {n_features}, {n_bins}).")
    if n == 0:
        return
    if n_chunks > 1:
        partial_base = &partial[0, 0, 0]
    # the features to fill, packed so that tiles never hold a masked feature
    active = np.flatnonzero(np.asarray(feature_mask)).astype(np.intc)
    n_active = active.shape[0]
    if n_active == 0:
        return
    n_tiles = (n_active + TILE - 1) // TILE
    n_tasks = n_tiles * n_chunks

    for task in prange(n_tasks, schedule='dynamic', nogil=True, num_threads=n_threads):
        _run_task(X_binned, rows, &gradients[0], &hessians[0], n, task, n_chunks, chunk_len,
                  &active[0], n_active, n_features, n_bins, hist_base, partial_base,
                  hessians_are_constant, h0)

    if n_chunks == 1:
        return
    # add the chunks' partials in chunk order (the same sums for any threads)
    for i in prange(n_active, schedule='static', nogil=True, num_threads=n_threads):
        f = active[i]
        dst = hist_base + f * n_bins
        for b in range(n_bins):
            sg = 0.
            sh = 0.
            cnt = 0
            for c in range(n_chunks):
                src = partial_base + (c * n_features + f) * n_bins + b
                sg = sg + src.sum_gradients
                sh = sh + src.sum_hessians
                cnt = cnt + src.count
            dst[b].sum_gradients = sg
            dst[b].sum_hessians = cnt * h0 if hessians_are_constant else sh
            dst[b].count = cnt


def subtract_histograms(const hist_struct[:, ::1] parent,
                        const hist_struct[:, ::1] sibling,
                        const unsigned char[::1] feature_mask,
                        int n_threads,
                        hist_struct[:, ::1] out):
    """``out = parent - sibling``: the larger child's histogram for free."""
    cdef Py_ssize_t f, b
    cdef Py_ssize_t n_features = parent.shape[0]
    cdef Py_ssize_t n_bins = parent.shape[1]
    for f in prange(n_features, schedule='static', nogil=True, num_threads=n_threads):
        if not feature_mask[f]:
            continue
        for b in range(n_bins):
            out[f, b].sum_gradients = parent[f, b].sum_gradients - sibling[f, b].sum_gradients
            out[f, b].sum_hessians = parent[f, b].sum_hessians - sibling[f, b].sum_hessians
            out[f, b].count = parent[f, b].count - sibling[f, b].count

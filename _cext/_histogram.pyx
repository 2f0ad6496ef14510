"""Gradient/hessian histograms of a node's rows, and the subtraction trick.

The filling itself (tasks of row chunk x feature block, chunked so that the
sums never depend on the thread count) is in ``_hist_fill.pxi``, shared with
the fused per-split step of ``_grow.pyx``.
"""
from cython.parallel import prange

import numpy as np

include "_hist_fill.pxi"


#: Python view of the chunk size (tests, docs).
ROWS_PER_CHUNK = CHUNK_ROWS


def n_chunks_for(Py_ssize_t n_rows, Py_ssize_t max_chunks):
    """Row chunks of a node of ``n_rows`` rows, given room for ``max_chunks``
    partial histograms (1 means: fill the histogram directly)."""
    return _n_chunks(n_rows, max_chunks)


def build_histogram(const X_BINNED_DTYPE_C[::1, :] X_binned,
                    const unsigned int[::1] sample_indices,
                    const G_H_DTYPE_C[::1] gradients,
                    const G_H_DTYPE_C[::1] hessians,
                    const unsigned char[::1] feature_mask,
                    bint all_rows,
                    bint hessians_are_constant,
                    int n_threads,
                    hist_struct[:, ::1] hist,
                    hist_struct[:, :, ::1] partial=None,
                    const X_BINNED_DTYPE_C[:, ::1] X_rows=None):
    """Fill ``hist[f]`` for every feature with ``feature_mask[f]``.

    ``sample_indices`` are the node's rows, ascending; with ``all_rows`` the
    node holds every row in order (``sample_indices`` is then only its
    length). ``partial`` (shape ``(max_chunks, n_features, n_bins)``) is
    scratch for the per-chunk histograms of large nodes; without it (or with
    room for one chunk) every feature is filled in one pass. ``X_rows``, a
    row-major copy of ``X_binned``, is read instead of it when given (the
    same sums; a row's bins of many features come in one cache line). One
    parallel region, plus one to add the chunks' partials when there are
    several.
    """
    cdef:
        hist_job job
        Py_ssize_t i, task
        int[::1] active
        Py_ssize_t n_bins = hist.shape[1]
        Py_ssize_t max_chunks = partial.shape[0] if partial is not None else 1

    job.n = sample_indices.shape[0]
    job.n_features = X_binned.shape[1]
    job.n_bins = n_bins
    if hist.shape[0] != job.n_features:
        raise ValueError(f"hist has {hist.shape[0]} features, X_binned {job.n_features}.")
    if partial is not None and (partial.shape[1] != job.n_features
                                or partial.shape[2] != n_bins):
        raise ValueError(f"partial has shape {tuple(partial.shape)[:3]}; expected "
                         f"(max_chunks, {job.n_features}, {n_bins}).")
    if X_rows is not None and (X_rows.shape[0] != X_binned.shape[0]
                               or X_rows.shape[1] != X_binned.shape[1]):
        raise ValueError(f"X_rows has shape {tuple(X_rows.shape)[:2]}; expected "
                         f"{tuple(X_binned.shape)[:2]}.")
    if job.n == 0:
        return
    # the features to fill, packed so that blocks never hold a masked feature
    active = np.flatnonzero(np.asarray(feature_mask)).astype(np.intc)
    job.n_active = active.shape[0]
    if job.n_active == 0:
        return
    job.active = &active[0]
    if X_rows is not None:
        job.X = &X_rows[0, 0]
        job.row_stride = job.n_features
        job.col_stride = 1
    else:
        job.X = &X_binned[0, 0]
        job.row_stride = 1
        job.col_stride = X_binned.shape[0]
    job.rows = NULL if all_rows else &sample_indices[0]
    job.g = &gradients[0]
    job.h = &hessians[0]
    job.hist = &hist[0, 0]
    job.hessians_are_constant = hessians_are_constant
    job.h0 = hessians[0] if hessians.shape[0] > 0 else 0.
    job.column_block = TILE
    _plan_job(&job, max_chunks, X_rows is not None, n_threads)
    job.partial = &partial[0, 0, 0] if job.n_chunks > 1 else NULL

    for task in prange(job.n_tasks, schedule='dynamic', nogil=True, num_threads=n_threads):
        _run_hist_task(&job, task)
    if job.n_chunks > 1:
        for i in prange(job.n_active, schedule='static', nogil=True, num_threads=n_threads):
            _reduce_hist_feature(&job, i)


def subtract_histograms(const hist_struct[:, ::1] parent,
                        const hist_struct[:, ::1] sibling,
                        const unsigned char[::1] feature_mask,
                        int n_threads,
                        hist_struct[:, ::1] out):
    """``out = parent - sibling``: the larger child's histogram for free."""
    cdef Py_ssize_t f
    cdef Py_ssize_t n_features = parent.shape[0]
    cdef Py_ssize_t n_bins = parent.shape[1]
    for f in prange(n_features, schedule='static', nogil=True, num_threads=n_threads):
        if feature_mask[f]:
            _subtract_hist_feature(&parent[f, 0], &sibling[f, 0], &out[f, 0], n_bins)

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


def padded_offsets(Py_ssize_t n_features, Py_ssize_t n_bins):
    """Offsets of the padded layout: every feature ``n_bins`` records, its
    last one the missing bin (a ``(n_features, n_bins)`` array, flattened)."""
    return np.arange(n_features + 1, dtype=np.intp) * n_bins


def flat_layout(hist, Py_ssize_t n_features, offsets, what="hist"):
    """``(flat, offsets)`` of a histogram given flat with its ``offsets``, or
    as a ``(n_features, n_bins)`` array (the padded layout; ``offsets`` must
    then be None). ``flat`` is a view: writing it writes ``hist``."""
    hist = np.asarray(hist)
    if hist.ndim == 2:
        if offsets is not None:
            raise ValueError(f"{what} is 2-D (padded); offsets are for a flat histogram")
        if hist.shape[0] != n_features:
            raise ValueError(f"{what} has {hist.shape[0]} features, X_binned {n_features}.")
        offsets = padded_offsets(n_features, hist.shape[1])
        return hist.reshape(-1), offsets
    if hist.ndim != 1 or offsets is None:
        raise ValueError(f"{what} must be (n_features, n_bins), or flat with its offsets")
    offsets = check_offsets(offsets, n_features)
    if hist.shape[0] != offsets[n_features]:
        raise ValueError(f"{what} has {hist.shape[0]} records; its offsets need "
                         f"{offsets[n_features]}.")
    return hist, offsets


def check_offsets(offsets, Py_ssize_t n_features, n_bins_non_missing=None):
    """``offsets`` as intp, checked: ``n_features + 1`` increasing entries
    from 0, every feature at least one record (its missing bin), and room
    for its ``n_bins_non_missing`` bins before it when given."""
    offsets = np.ascontiguousarray(offsets, dtype=np.intp)
    if offsets.ndim != 1 or offsets.shape[0] != n_features + 1 or offsets[0] != 0:
        raise ValueError(f"offsets must be {n_features + 1} entries starting at 0")
    sizes = np.diff(offsets)
    if np.any(sizes < 1):
        raise ValueError("offsets must give every feature at least one record")
    if n_bins_non_missing is not None and np.any(
            sizes < np.asarray(n_bins_non_missing, dtype=np.intp) + 1):
        raise ValueError("offsets give a feature fewer records than its bins + the missing bin")
    return offsets


def sparse_parts(sparse, Py_ssize_t n_rows, offsets, feature_mask):
    """The arrays a histogram job reads for ``sparse`` (a
    ``dartboost._sparse_columns.SparseColumns`` of the binned matrix, or
    None), checked against the matrix's ``n_rows`` and the layout
    ``offsets``: ``(is_sparse, default_record, row_ptr, records, record_on,
    dense)``, ``record_on`` flagging the records of the sparse features in
    ``feature_mask`` and ``dense`` listing the other features of the mask.
    None when ``sparse`` is."""
    if sparse is None:
        return None
    offsets = np.asarray(offsets, dtype=np.intp)
    n_features = offsets.shape[0] - 1
    is_sparse = np.ascontiguousarray(sparse.is_sparse, dtype=np.uint8)
    default_record = np.ascontiguousarray(sparse.default_record, dtype=np.intp)
    row_ptr = np.ascontiguousarray(sparse.row_ptr, dtype=np.intp)
    records = np.ascontiguousarray(sparse.records, dtype=np.uint32)
    if is_sparse.shape != (n_features,) or default_record.shape != (n_features,):
        raise ValueError(f"sparse columns need one flag and default per feature ({n_features})")
    if row_ptr.shape != (n_rows + 1,) or row_ptr[0] != 0 or row_ptr[n_rows] != records.shape[0] \
            or np.any(np.diff(row_ptr) < 0):
        raise ValueError(f"sparse row_ptr must be {n_rows + 1} increasing entries from 0 to "
                         "the number of entries")
    if records.shape[0] and records.max() >= offsets[n_features]:
        raise ValueError("sparse records past the histogram's layout")
    flagged = is_sparse.astype(bool)
    if np.any((default_record[flagged] < offsets[:-1][flagged])
              | (default_record[flagged] >= offsets[1:][flagged])):
        raise ValueError("a sparse feature's default record is outside its histogram")
    mask = np.asarray(feature_mask).astype(bool)
    record_on = np.repeat(mask & flagged, np.diff(offsets)).astype(np.uint8)
    dense = np.flatnonzero(mask & ~flagged).astype(np.intc)
    return is_sparse, default_record, row_ptr, records, record_on, dense


def build_histogram(const X_BINNED_DTYPE_C[::1, :] X_binned,
                    const unsigned int[::1] sample_indices,
                    const G_H_DTYPE_C[::1] gradients,
                    const G_H_DTYPE_C[::1] hessians,
                    const unsigned char[::1] feature_mask,
                    bint all_rows,
                    bint hessians_are_constant,
                    int n_threads,
                    hist,
                    partial=None,
                    const X_BINNED_DTYPE_C[:, ::1] X_rows=None,
                    offsets=None, sparse=None):
    """Fill feature ``f``'s histogram for every feature with ``feature_mask[f]``.

    ``hist`` is flat (feature ``f``'s records at ``offsets[f] ..
    offsets[f+1]-1``, the last one its missing bin) or, without
    ``offsets``, a ``(n_features, n_bins)`` array (every feature ``n_bins``
    records). ``sample_indices`` are the node's rows, ascending; with
    ``all_rows`` the node holds every row in order (``sample_indices`` is
    then only its length). ``partial`` (``(max_chunks, n_records)``, or
    ``(max_chunks, n_features, n_bins)`` for a 2-D ``hist``) is scratch for
    the per-chunk histograms of large nodes; without it (or with room for one
    chunk) every feature is filled in one pass. ``X_rows``, a row-major copy
    of ``X_binned``, is read instead of it when given (the same sums; a row's
    bins of many features come in one cache line). With ``sparse`` (the
    matrix's ``SparseColumns``, flat histograms only) its features are
    filled from their entries, their default bin by subtraction. One
    parallel region, plus one to add the chunks' partials (and set the
    default bins) when there are several.
    """
    cdef:
        hist_job job
        Py_ssize_t i, task
        int[::1] active
        hist_struct[::1] flat
        hist_struct[:, ::1] partial_flat
        const Py_ssize_t[::1] offs
        Py_ssize_t max_chunks = 1
        int[::1] dense
        const unsigned char[::1] sp_is
        const unsigned char[::1] sp_on
        const Py_ssize_t[::1] sp_default
        const Py_ssize_t[::1] sp_ptr
        const unsigned int[::1] sp_records

    job.n = sample_indices.shape[0]
    job.n_features = X_binned.shape[1]
    flat_arr, offsets_arr = flat_layout(hist, job.n_features, offsets)
    flat = flat_arr
    offs = offsets_arr
    job.total = offs[job.n_features]
    if partial is not None:
        partial = np.asarray(partial)
        if partial.ndim == 3 and np.asarray(hist).ndim == 2:
            if partial.shape[1:] != np.asarray(hist).shape:
                raise ValueError(f"partial has shape {partial.shape}; expected "
                                 f"(max_chunks, {job.n_features}, {np.asarray(hist).shape[1]}).")
            partial = partial.reshape(partial.shape[0], -1)
        if partial.ndim != 2 or partial.shape[1] != job.total:
            raise ValueError(f"partial has shape {partial.shape}; expected "
                             f"(max_chunks, {job.total}).")
        partial_flat = partial
        max_chunks = partial_flat.shape[0]
    if X_rows is not None and (X_rows.shape[0] != X_binned.shape[0]
                               or X_rows.shape[1] != X_binned.shape[1]):
        raise ValueError(f"X_rows has shape {tuple(X_rows.shape)[:2]}; expected "
                         f"{tuple(X_binned.shape)[:2]}.")
    if feature_mask.shape[0] != job.n_features:
        raise ValueError(f"feature_mask needs one flag per feature ({job.n_features})")
    if job.n == 0:
        return
    # the features to fill, packed so that blocks never hold a masked feature
    active = np.flatnonzero(np.asarray(feature_mask)).astype(np.intc)
    job.n_active = active.shape[0]
    if job.n_active == 0:
        return
    job.active = &active[0]
    job.offsets = &offs[0]
    job.row_col = NULL
    job.row_ptr = NULL
    parts = sparse_parts(sparse, X_binned.shape[0], offsets_arr, feature_mask)
    if parts is None:
        dense = active
    else:
        sp_is, sp_default, sp_ptr, sp_records, sp_on, dense = parts
        job.is_sparse = &sp_is[0]
        job.default_record = &sp_default[0]
        job.row_ptr = &sp_ptr[0]
        job.records = &sp_records[0] if sp_records.shape[0] > 0 else NULL
        job.record_on = &sp_on[0]
    job.n_dense = dense.shape[0]
    job.dense = &dense[0] if job.n_dense > 0 else NULL
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
    job.hist = &flat[0]
    job.hessians_are_constant = hessians_are_constant
    job.h0 = hessians[0] if hessians.shape[0] > 0 else 0.
    job.column_block = TILE
    _plan_job(&job, max_chunks, X_rows is not None, n_threads)
    job.partial = &partial_flat[0, 0] if job.n_chunks > 1 else NULL

    for task in prange(job.n_tasks, schedule='dynamic', nogil=True, num_threads=n_threads):
        _run_hist_task(&job, task)
    if _needs_finish(&job):
        for i in prange(job.n_active, schedule='static', nogil=True, num_threads=n_threads):
            _finish_hist_feature(&job, i)


def subtract_histograms(parent, sibling, const unsigned char[::1] feature_mask,
                        int n_threads, out, offsets=None):
    """``out = parent - sibling`` for the features in ``feature_mask``: the
    larger child's histogram for free (histograms as in ``build_histogram``)."""
    cdef Py_ssize_t f
    cdef Py_ssize_t n_features = feature_mask.shape[0]
    cdef const hist_struct[::1] p
    cdef const hist_struct[::1] s
    cdef hist_struct[::1] o
    cdef const Py_ssize_t[::1] offs
    p, offsets_arr = flat_layout(parent, n_features, offsets, "parent")
    s = flat_layout(sibling, n_features, offsets, "sibling")[0]
    o = flat_layout(out, n_features, offsets, "out")[0]
    offs = offsets_arr
    for f in prange(n_features, schedule='static', nogil=True, num_threads=n_threads):
        if feature_mask[f]:
            _subtract_hist_feature(&p[offs[f]], &s[offs[f]], &o[offs[f]],
                                   offs[f + 1] - offs[f])

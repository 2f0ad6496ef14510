"""Gradient/hessian histograms of a node's rows, and the subtraction trick."""
from cython.parallel import prange

from _common cimport X_BINNED_DTYPE_C, Y_DTYPE_C, G_H_DTYPE_C, hist_struct


def build_histogram(const X_BINNED_DTYPE_C[::1, :] X_binned,
                    const unsigned int[::1] sample_indices,
                    const G_H_DTYPE_C[::1] gradients,
                    const G_H_DTYPE_C[::1] hessians,
                    G_H_DTYPE_C[::1] ordered_gradients,
                    G_H_DTYPE_C[::1] ordered_hessians,
                    const unsigned char[::1] feature_mask,
                    bint all_rows,
                    bint hessians_are_constant,
                    int n_threads,
                    hist_struct[:, ::1] hist):
    """Fill ``hist[f]`` for every feature with ``feature_mask[f]``.

    Gradients are first gathered into node order (``ordered_*`` buffers, of at
    least ``len(sample_indices)``) so the per-feature loops read them
    sequentially. With ``all_rows`` the node holds every row in order and the
    gather is skipped.
    """
    cdef:
        Py_ssize_t n = sample_indices.shape[0]
        Py_ssize_t n_features = X_binned.shape[1]
        Py_ssize_t n_bins = hist.shape[1]
        Py_ssize_t i, f, b
        unsigned int row
        X_BINNED_DTYPE_C bin_idx
        const G_H_DTYPE_C[::1] g
        const G_H_DTYPE_C[::1] h
        Y_DTYPE_C h0 = hessians[0] if hessians.shape[0] > 0 else 0.

    if all_rows:
        g = gradients
        h = hessians
    else:
        for i in prange(n, schedule='static', nogil=True, num_threads=n_threads):
            ordered_gradients[i] = gradients[sample_indices[i]]
            if not hessians_are_constant:
                ordered_hessians[i] = hessians[sample_indices[i]]
        g = ordered_gradients
        h = ordered_hessians

    for f in prange(n_features, schedule='dynamic', nogil=True, num_threads=n_threads):
        if not feature_mask[f]:
            continue
        for b in range(n_bins):
            hist[f, b].sum_gradients = 0.
            hist[f, b].sum_hessians = 0.
            hist[f, b].count = 0
        if hessians_are_constant:
            if all_rows:
                for i in range(n):
                    bin_idx = X_binned[i, f]
                    hist[f, bin_idx].sum_gradients += g[i]
                    hist[f, bin_idx].count += 1
            else:
                for i in range(n):
                    bin_idx = X_binned[sample_indices[i], f]
                    hist[f, bin_idx].sum_gradients += g[i]
                    hist[f, bin_idx].count += 1
            for b in range(n_bins):
                hist[f, b].sum_hessians = hist[f, b].count * h0
        elif all_rows:
            for i in range(n):
                bin_idx = X_binned[i, f]
                hist[f, bin_idx].sum_gradients += g[i]
                hist[f, bin_idx].sum_hessians += h[i]
                hist[f, bin_idx].count += 1
        else:
            for i in range(n):
                bin_idx = X_binned[sample_indices[i], f]
                hist[f, bin_idx].sum_gradients += g[i]
                hist[f, bin_idx].sum_hessians += h[i]
                hist[f, bin_idx].count += 1


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

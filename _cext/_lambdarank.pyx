"""LambdaMART gradients and NDCG over query groups.

Rows are grouped into queries given by ``offsets`` (query ``q`` owns rows
``offsets[q]:offsets[q + 1]``). Queries are independent, so both kernels run
in parallel over queries; each query sorts its own rows by score in its own
slice of a shared index buffer, so threads never write to the same memory.
"""
from cython.parallel import prange
from libc.math cimport exp, fabs, log2

from _common cimport Y_DTYPE_C, G_H_DTYPE_C

# Rows in no informative pair (a query with one grade) have a zero hessian; a
# leaf made only of such rows would divide 0 by 0. This floor makes its value
# 0 instead and is far below any min_child_weight that matters.
cdef Y_DTYPE_C HESSIAN_FLOOR = 1e-12


cdef void _merge_sort_desc(const Y_DTYPE_C* score, Py_ssize_t* idx, Py_ssize_t* tmp,
                           Py_ssize_t m) noexcept nogil:
    """Sort ``idx[:m]`` by ``score[idx]`` descending; stable, so equal scores
    keep row order (the same tie rule as LightGBM's evaluation)."""
    cdef Py_ssize_t width, lo, mid, hi, a, b, k, i, j, key
    # Short runs by insertion sort, then bottom-up merges.
    cdef Py_ssize_t run = 16
    lo = 0
    while lo < m:
        hi = lo + run if lo + run < m else m
        for i in range(lo + 1, hi):
            key = idx[i]
            j = i - 1
            while j >= lo and score[idx[j]] < score[key]:
                idx[j + 1] = idx[j]
                j -= 1
            idx[j + 1] = key
        lo = hi
    width = run
    while width < m:
        lo = 0
        while lo < m:
            mid = lo + width if lo + width < m else m
            hi = lo + 2 * width if lo + 2 * width < m else m
            a = lo
            b = mid
            k = lo
            while a < mid and b < hi:
                # ">=" keeps the left (earlier) element first on ties: stable
                if score[idx[a]] >= score[idx[b]]:
                    tmp[k] = idx[a]
                    a += 1
                else:
                    tmp[k] = idx[b]
                    b += 1
                k += 1
            while a < mid:
                tmp[k] = idx[a]
                a += 1
                k += 1
            while b < hi:
                tmp[k] = idx[b]
                b += 1
                k += 1
            lo = hi
        for i in range(m):
            idx[i] = tmp[i]
        width *= 2


cdef void _query_lambdas(const Y_DTYPE_C* label, const Y_DTYPE_C* gain, const Y_DTYPE_C* raw,
                         const Y_DTYPE_C* discount, Py_ssize_t m, Y_DTYPE_C inv_max_dcg,
                         Py_ssize_t truncation, Y_DTYPE_C sigma, bint norm,
                         Y_DTYPE_C weight, Py_ssize_t* idx, Py_ssize_t* tmp,
                         Y_DTYPE_C* g, Y_DTYPE_C* h) noexcept nogil:
    cdef Py_ssize_t i, j, a, b, hi, lo, top
    cdef Y_DTYPE_C d_hi, d_lo, ds, delta, rho, lam, hes, best, worst, total, factor
    for i in range(m):
        g[i] = 0.
        h[i] = 0.
        idx[i] = i
    # A query with one row or no relevant row has no informative pair.
    if m < 2 or inv_max_dcg == 0.:
        return
    _merge_sort_desc(raw, idx, tmp, m)
    best = raw[idx[0]]
    worst = raw[idx[m - 1]]
    top = m - 1
    if truncation > 0 and truncation < top:
        top = truncation
    total = 0.
    # Pairs (i, j) by current rank, i < j; only pairs whose better-placed
    # document is in the top ``truncation`` ranks (all pairs when none).
    for i in range(top):
        a = idx[i]
        for j in range(i + 1, m):
            b = idx[j]
            if label[a] == label[b]:
                continue
            if label[a] > label[b]:
                hi = a
                lo = b
                d_hi = discount[i]
                d_lo = discount[j]
            else:
                hi = b
                lo = a
                d_hi = discount[j]
                d_lo = discount[i]
            ds = raw[hi] - raw[lo]
            # |change of NDCG| if the two documents swapped places
            delta = fabs(gain[hi] - gain[lo]) * fabs(d_hi - d_lo) * inv_max_dcg
            if norm and best != worst:
                # damp pairs already far apart in score (LightGBM's rule), so
                # the gradient concentrates on pairs still being sorted
                delta = delta / (0.01 + fabs(ds))
            # RankNet probability that the pair is mis-ordered
            rho = 1. / (1. + exp(sigma * ds))
            lam = sigma * delta * rho
            hes = sigma * sigma * delta * rho * (1. - rho)
            g[hi] -= lam
            g[lo] += lam
            h[hi] += hes
            h[lo] += hes
            total += 2. * lam
    factor = weight
    if norm and total > 0.:
        # queries with many mis-ordered pairs would otherwise dominate the
        # tree; log2(1 + total) / total keeps their pull sub-linear
        factor = weight * log2(1. + total) / total
    if factor != 1.:
        for i in range(m):
            g[i] *= factor
            h[i] *= factor


def lambdarank_gradients(const Y_DTYPE_C[::1] label, const Y_DTYPE_C[::1] gain,
                         const Y_DTYPE_C[::1] raw, const Py_ssize_t[::1] offsets,
                         const Y_DTYPE_C[::1] inv_max_dcg, const Y_DTYPE_C[::1] query_weight,
                         const Y_DTYPE_C[::1] discount, Py_ssize_t truncation, Y_DTYPE_C sigma,
                         bint norm, int n_threads, Py_ssize_t[::1] idx_buf,
                         Py_ssize_t[::1] tmp_buf, Y_DTYPE_C[::1] g_buf, Y_DTYPE_C[::1] h_buf,
                         G_H_DTYPE_C[::1] gradients, G_H_DTYPE_C[::1] hessians):
    """LambdaMART gradients/hessians of every row.

    Parameters
    ----------
    label, gain, raw : float64 arrays of shape (n,)
        Relevance grades, their gains (e.g. ``2**label - 1``) and raw scores.
    offsets : int64 array of shape (n_queries + 1,)
    inv_max_dcg : float64 array of shape (n_queries,)
        ``1 / ideal DCG`` of each query (at the truncation level), 0 when the
        query has no relevant document.
    query_weight : float64 array of shape (n_queries,) or (0,) for unit weights
    discount : float64 array, ``discount[r] = 1 / log2(r + 2)``, length >= the
        largest query
    truncation : int
        Only pairs with one document in the top ``truncation`` ranks; ``<= 0``
        for all pairs.
    sigma : float
        Steepness of the pairwise logistic.
    norm : bool
        LightGBM's normalisation (score-distance damping and per-query scaling).
    n_threads : int
    idx_buf, tmp_buf, g_buf, h_buf : work arrays of shape (n,)
    gradients, hessians : float32 arrays of shape (n,), written
    """
    cdef Py_ssize_t q, i, start, m
    cdef Py_ssize_t n_queries = offsets.shape[0] - 1
    cdef bint weighted = query_weight.shape[0] > 0
    cdef Y_DTYPE_C w
    for q in prange(n_queries, schedule='dynamic', nogil=True, num_threads=n_threads):
        start = offsets[q]
        m = offsets[q + 1] - start
        w = query_weight[q] if weighted else 1.
        _query_lambdas(&label[start], &gain[start], &raw[start], &discount[0], m,
                       inv_max_dcg[q], truncation, sigma, norm, w, &idx_buf[start],
                       &tmp_buf[start], &g_buf[start], &h_buf[start])
        for i in range(start, start + m):
            gradients[i] = <G_H_DTYPE_C>g_buf[i]
            hessians[i] = <G_H_DTYPE_C>(h_buf[i] if h_buf[i] > HESSIAN_FLOOR else HESSIAN_FLOOR)


def dcg_at_k(const Y_DTYPE_C[::1] gain, const Y_DTYPE_C[::1] raw, const Py_ssize_t[::1] offsets,
             const Y_DTYPE_C[::1] discount, Py_ssize_t k, int n_threads,
             Py_ssize_t[::1] idx_buf, Py_ssize_t[::1] tmp_buf, Y_DTYPE_C[::1] out):
    """DCG@k of each query when its rows are ranked by ``raw`` (descending,
    ties in row order). ``k <= 0`` means the whole list. Writes ``out``
    (shape ``(n_queries,)``)."""
    cdef Py_ssize_t q, r, start, m, top
    cdef Py_ssize_t n_queries = offsets.shape[0] - 1
    cdef Y_DTYPE_C acc
    for q in prange(n_queries, schedule='dynamic', nogil=True, num_threads=n_threads):
        start = offsets[q]
        m = offsets[q + 1] - start
        for r in range(m):
            idx_buf[start + r] = r
        _merge_sort_desc(&raw[start], &idx_buf[start], &tmp_buf[start], m)
        top = m
        if k > 0 and k < m:
            top = k
        acc = 0.
        for r in range(top):
            acc = acc + gain[start + idx_buf[start + r]] * discount[r]
        out[q] = acc

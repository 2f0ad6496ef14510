"""Gradients and hessians of the losses at the current raw scores.

Each kernel writes float32 gradients/hessians; ``sample_weight`` of length 0
means unit weights.
"""
from cython.parallel import prange
from libc.math cimport exp, fabs

from _common cimport Y_DTYPE_C, G_H_DTYPE_C


def squared_error(const Y_DTYPE_C[::1] y, const Y_DTYPE_C[::1] raw,
                  const Y_DTYPE_C[::1] sample_weight, int n_threads,
                  G_H_DTYPE_C[::1] gradients, G_H_DTYPE_C[::1] hessians):
    cdef Py_ssize_t i
    cdef bint weighted = sample_weight.shape[0] > 0
    for i in prange(y.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        if weighted:
            gradients[i] = <G_H_DTYPE_C>(sample_weight[i] * (raw[i] - y[i]))
            hessians[i] = <G_H_DTYPE_C>sample_weight[i]
        else:
            gradients[i] = <G_H_DTYPE_C>(raw[i] - y[i])
            hessians[i] = 1.


def absolute_error(const Y_DTYPE_C[::1] y, const Y_DTYPE_C[::1] raw,
                   const Y_DTYPE_C[::1] sample_weight, int n_threads,
                   G_H_DTYPE_C[::1] gradients, G_H_DTYPE_C[::1] hessians):
    cdef Py_ssize_t i
    cdef bint weighted = sample_weight.shape[0] > 0
    cdef Y_DTYPE_C w, g
    for i in prange(y.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        w = sample_weight[i] if weighted else 1.
        g = 1. if raw[i] > y[i] else -1.
        gradients[i] = <G_H_DTYPE_C>(w * g)
        hessians[i] = <G_H_DTYPE_C>w


def quantile(const Y_DTYPE_C[::1] y, const Y_DTYPE_C[::1] raw,
             const Y_DTYPE_C[::1] sample_weight, Y_DTYPE_C q, int n_threads,
             G_H_DTYPE_C[::1] gradients, G_H_DTYPE_C[::1] hessians):
    cdef Py_ssize_t i
    cdef bint weighted = sample_weight.shape[0] > 0
    cdef Y_DTYPE_C w, g
    for i in prange(y.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        w = sample_weight[i] if weighted else 1.
        g = (1. - q) if raw[i] > y[i] else -q
        gradients[i] = <G_H_DTYPE_C>(w * g)
        hessians[i] = <G_H_DTYPE_C>w


def huber(const Y_DTYPE_C[::1] y, const Y_DTYPE_C[::1] raw,
          const Y_DTYPE_C[::1] sample_weight, Y_DTYPE_C delta, int n_threads,
          G_H_DTYPE_C[::1] gradients, G_H_DTYPE_C[::1] hessians):
    cdef Py_ssize_t i
    cdef bint weighted = sample_weight.shape[0] > 0
    cdef Y_DTYPE_C w, r
    for i in prange(y.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        w = sample_weight[i] if weighted else 1.
        r = raw[i] - y[i]
        if fabs(r) > delta:
            r = delta if r > 0 else -delta
        gradients[i] = <G_H_DTYPE_C>(w * r)
        hessians[i] = <G_H_DTYPE_C>w


def poisson(const Y_DTYPE_C[::1] y, const Y_DTYPE_C[::1] raw,
            const Y_DTYPE_C[::1] sample_weight, int n_threads,
            G_H_DTYPE_C[::1] gradients, G_H_DTYPE_C[::1] hessians):
    # raw is log(mu); loss = mu - y*raw
    cdef Py_ssize_t i
    cdef bint weighted = sample_weight.shape[0] > 0
    cdef Y_DTYPE_C w, mu
    for i in prange(y.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        w = sample_weight[i] if weighted else 1.
        mu = exp(raw[i])
        gradients[i] = <G_H_DTYPE_C>(w * (mu - y[i]))
        hessians[i] = <G_H_DTYPE_C>(w * mu)


def binary_log_loss(const Y_DTYPE_C[::1] y, const Y_DTYPE_C[::1] raw,
                    const Y_DTYPE_C[::1] sample_weight, int n_threads,
                    G_H_DTYPE_C[::1] gradients, G_H_DTYPE_C[::1] hessians):
    cdef Py_ssize_t i
    cdef bint weighted = sample_weight.shape[0] > 0
    cdef Y_DTYPE_C w, p
    for i in prange(y.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        w = sample_weight[i] if weighted else 1.
        if raw[i] >= 0:
            p = 1. / (1. + exp(-raw[i]))
        else:
            p = exp(raw[i]) / (1. + exp(raw[i]))
        gradients[i] = <G_H_DTYPE_C>(w * (p - y[i]))
        hessians[i] = <G_H_DTYPE_C>(w * p * (1. - p))


def softmax_log_loss(const Y_DTYPE_C[::1] y, const Y_DTYPE_C[:, ::1] raw,
                     const Y_DTYPE_C[::1] sample_weight, int n_threads,
                     G_H_DTYPE_C[:, ::1] gradients, G_H_DTYPE_C[:, ::1] hessians):
    """Multiclass log-loss; ``raw``, ``gradients`` and ``hessians`` are
    ``(n_classes, n_samples)`` and ``y`` holds class indices as floats."""
    cdef Py_ssize_t i, k
    cdef Py_ssize_t K = raw.shape[0]
    cdef bint weighted = sample_weight.shape[0] > 0
    cdef Y_DTYPE_C w, m, s, p
    for i in prange(y.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        w = sample_weight[i] if weighted else 1.
        m = raw[0, i]
        for k in range(1, K):
            if raw[k, i] > m:
                m = raw[k, i]
        s = 0.
        for k in range(K):
            s = s + exp(raw[k, i] - m)
        for k in range(K):
            p = exp(raw[k, i] - m) / s
            gradients[k, i] = <G_H_DTYPE_C>(w * (p - (1. if y[i] == k else 0.)))
            hessians[k, i] = <G_H_DTYPE_C>(w * p * (1. - p))

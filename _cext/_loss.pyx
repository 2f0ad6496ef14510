"""Gradients and hessians of the losses at the current raw scores.

One loop serves every pointwise loss: each loss is a struct type (carrying its
parameter) in the fused type ``Loss``, and ``_point`` holds each loss's
formula in a compile-time branch, so Cython emits one specialised loop per
loss with no per-row dispatch. Adding a loss means one struct, one branch and
one name in ``gradient_hessian``.

Kernels write float32 gradients/hessians; ``sample_weight`` of length 0 means
unit weights.
"""
from cython.parallel import prange
from libc.math cimport exp, fabs

from _common cimport Y_DTYPE_C, G_H_DTYPE_C


cdef struct SquaredError:
    Y_DTYPE_C unused

cdef struct AbsoluteError:
    Y_DTYPE_C unused

cdef struct Quantile:
    Y_DTYPE_C q          # the quantile level

cdef struct Huber:
    Y_DTYPE_C delta      # residuals beyond it are clipped

cdef struct Poisson:
    Y_DTYPE_C unused     # raw is log(mu); loss = mu - y * raw

cdef struct BinaryLogLoss:
    Y_DTYPE_C unused     # raw is the log-odds

cdef struct Gamma:
    Y_DTYPE_C unused     # raw is log(mu); loss = y * exp(-raw) + raw

cdef struct Tweedie:
    Y_DTYPE_C rho        # variance power in (1, 2); raw is log(mu)

ctypedef fused Loss:
    SquaredError
    AbsoluteError
    Quantile
    Huber
    Poisson
    BinaryLogLoss
    Gamma
    Tweedie


cdef inline void _point(Loss* loss, Y_DTYPE_C y, Y_DTYPE_C raw, Y_DTYPE_C w,
                        G_H_DTYPE_C* grad, G_H_DTYPE_C* hess) noexcept nogil:
    """Gradient and hessian of one row's loss w.r.t. ``raw``, times its weight
    ``w``. (Written through pointers into the output arrays so that the
    parallel loop has no shared temporaries.)"""
    cdef Y_DTYPE_C r, p, q, g, h
    if Loss is SquaredError:
        g = raw - y
        h = 1.
    elif Loss is AbsoluteError:
        # hessian 1: a Newton step is meaningless here; leaves are refit
        g = 1. if raw > y else -1.
        h = 1.
    elif Loss is Quantile:
        g = (1. - loss.q) if raw > y else -loss.q
        h = 1.
    elif Loss is Huber:
        # hessian 1 also in the linear part (sklearn/LightGBM's surrogate),
        # so leaf values stay bounded steps instead of dividing by ~0
        r = raw - y
        if fabs(r) > loss.delta:
            r = loss.delta if r > 0 else -loss.delta
        g = r
        h = 1.
    elif Loss is Poisson:
        p = exp(raw)
        g = p - y
        h = p
    elif Loss is BinaryLogLoss:
        # the sigmoid without overflow on either side
        if raw >= 0:
            p = 1. / (1. + exp(-raw))
        else:
            p = exp(raw) / (1. + exp(raw))
        g = p - y
        h = p * (1. - p)
    elif Loss is Gamma:
        # the negative log-likelihood y / mu + log(mu) in raw = log(mu)
        p = y * exp(-raw)
        g = 1. - p
        h = p
    elif Loss is Tweedie:
        # loss = -y mu^(1-rho) / (1-rho) + mu^(2-rho) / (2-rho) (LightGBM's);
        # both hessian terms are >= 0 for rho in (1, 2)
        p = exp((1. - loss.rho) * raw)
        q = exp((2. - loss.rho) * raw)
        g = q - y * p
        h = (2. - loss.rho) * q - (1. - loss.rho) * y * p
    grad[0] = <G_H_DTYPE_C>(w * g)
    hess[0] = <G_H_DTYPE_C>(w * h)


cdef void _gradients(Loss* loss, const Y_DTYPE_C[::1] y, const Y_DTYPE_C[::1] raw,
                     const Y_DTYPE_C[::1] sample_weight, int n_threads,
                     G_H_DTYPE_C[::1] gradients, G_H_DTYPE_C[::1] hessians) noexcept nogil:
    cdef Py_ssize_t i
    cdef bint weighted = sample_weight.shape[0] > 0
    cdef Y_DTYPE_C w
    for i in prange(y.shape[0], schedule='static', num_threads=n_threads):
        w = sample_weight[i] if weighted else 1.
        _point(loss, y[i], raw[i], w, &gradients[i], &hessians[i])


#: Losses ``gradient_hessian`` knows.
POINTWISE_LOSSES = ("squared_error", "absolute_error", "quantile", "huber", "poisson",
                    "binary_log_loss", "gamma", "tweedie")


def gradient_hessian(str name, const Y_DTYPE_C[::1] y, const Y_DTYPE_C[::1] raw,
                     const Y_DTYPE_C[::1] sample_weight, Y_DTYPE_C param, int n_threads,
                     G_H_DTYPE_C[::1] gradients, G_H_DTYPE_C[::1] hessians):
    """Weighted gradients and hessians of a pointwise loss.

    Parameters
    ----------
    name : str
        One of :data:`POINTWISE_LOSSES`.
    y, raw : float64 arrays of shape (n,)
    sample_weight : float64 array of shape (n,), or (0,) for unit weights
    param : float
        The quantile level for ``"quantile"``, ``delta`` for ``"huber"``, the
        variance power for ``"tweedie"``; ignored by the others.
    n_threads : int
    gradients, hessians : float32 arrays of shape (n,), written
    """
    cdef SquaredError se
    cdef AbsoluteError ae
    cdef Quantile qu
    cdef Huber hu
    cdef Poisson po
    cdef BinaryLogLoss bl
    cdef Gamma ga
    cdef Tweedie tw
    if name == "squared_error":
        with nogil:
            _gradients(&se, y, raw, sample_weight, n_threads, gradients, hessians)
    elif name == "absolute_error":
        with nogil:
            _gradients(&ae, y, raw, sample_weight, n_threads, gradients, hessians)
    elif name == "quantile":
        qu.q = param
        with nogil:
            _gradients(&qu, y, raw, sample_weight, n_threads, gradients, hessians)
    elif name == "huber":
        hu.delta = param
        with nogil:
            _gradients(&hu, y, raw, sample_weight, n_threads, gradients, hessians)
    elif name == "poisson":
        with nogil:
            _gradients(&po, y, raw, sample_weight, n_threads, gradients, hessians)
    elif name == "binary_log_loss":
        with nogil:
            _gradients(&bl, y, raw, sample_weight, n_threads, gradients, hessians)
    elif name == "gamma":
        with nogil:
            _gradients(&ga, y, raw, sample_weight, n_threads, gradients, hessians)
    elif name == "tweedie":
        tw.rho = param
        with nogil:
            _gradients(&tw, y, raw, sample_weight, n_threads, gradients, hessians)
    else:
        raise ValueError(f"Unknown pointwise loss {name!r}; expected one of {POINTWISE_LOSSES}.")


def softmax_log_loss(const Y_DTYPE_C[::1] y, const Y_DTYPE_C[:, ::1] raw,
                     const Y_DTYPE_C[::1] sample_weight, int n_threads,
                     G_H_DTYPE_C[:, ::1] gradients, G_H_DTYPE_C[:, ::1] hessians):
    """Multiclass log-loss; ``raw``, ``gradients`` and ``hessians`` are
    ``(n_classes, n_samples)`` and ``y`` holds class indices as floats. (Not a
    pointwise loss: each row couples its ``K`` scores through the softmax.)"""
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


def binary_proba(const Y_DTYPE_C[::1] raw, Y_DTYPE_C[:, ::1] out, int n_threads):
    """``out[i] = (1 - p, p)`` with ``p = 1 / (1 + exp(-raw[i]))``: the
    probabilities of a binary log-loss model, written straight into the
    ``(n_samples, 2)`` array ``predict_proba`` returns, in parallel (the same
    formula, and the same C ``exp``, as ``scipy.special.expit``)."""
    cdef Py_ssize_t i
    cdef Y_DTYPE_C p
    if out.shape[0] != raw.shape[0] or out.shape[1] != 2:
        raise ValueError("out must have shape (n_samples, 2)")
    for i in prange(raw.shape[0], schedule='static', nogil=True, num_threads=n_threads):
        p = 1. / (1. + exp(-raw[i]))
        out[i, 0] = 1. - p
        out[i, 1] = p

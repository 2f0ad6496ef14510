"""Raw model outputs, erasure-code matrices, encoders and the linear decoder.

Everything here is model-agnostic: it turns groups of ``k`` query batches into
``r`` parity queries (encoders) and rebuilds missing outputs from the others
(:func:`linear_decode`). The parity models that answer the parity queries live
in :mod:`dartboost.coded._parity`.
"""

import numbers

import numpy as np
from sklearn.base import BaseEstimator, is_classifier
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "raw_output",
    "code_matrix",
    "linear_decode",
    "decode_amplification",
    "proba_from_raw",
    "raw_gives_proba",
    "SumEncoder",
    "ConcatEncoder",
    "ImageConcatEncoder",
    "FunctionEncoder",
    "check_encoder",
]

# Probabilities are clipped before taking logs so that a tree ensemble that
# outputs an exact 0 or 1 gives a large but finite margin.
_PROBA_EPS = 1e-7


def _mlp_logits(mlp, X):
    """Pre-activation output of a fitted scikit-learn MLP (its logits).

    ``MLPClassifier`` exposes no ``decision_function``; its ``predict_proba``
    squashes the last layer through softmax/logistic, and parity models must be
    trained on unsquashed outputs (sums of probabilities are not probabilities,
    and saturated probabilities hide the margin). The forward pass is a few
    matrix products over the public ``coefs_``/``intercepts_``.
    """
    act = {
        "identity": lambda z: z,
        "logistic": lambda z: 1.0 / (1.0 + np.exp(-z)),
        "tanh": np.tanh,
        "relu": lambda z: np.maximum(z, 0.0),
    }[mlp.activation]
    h = np.asarray(X, dtype=np.float64)
    n_layers = len(mlp.coefs_)
    for i, (W, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_)):
        h = h @ W + b
        if i < n_layers - 1:
            h = act(h)
    return h


def raw_output(estimator, X):
    """Raw (unsquashed) output of a fitted estimator, always 2-D float64.

    Parity models are trained to reproduce *sums* of these outputs, so they
    must live in a space where sums are meaningful: margins/logits for
    classifiers, predicted values for regressors.

    Parameters
    ----------
    estimator : fitted estimator
        A scikit-learn compatible regressor or classifier.
    X : array-like of shape (n_samples, n_features)
        Queries.

    Returns
    -------
    raw : ndarray of shape (n_samples, n_outputs)
        Regressors: ``predict(X)`` (``n_outputs`` targets). Classifiers:
        ``decision_function(X)`` when available (one column for binary
        problems, positive meaning ``classes_[1]``); the logits of a
        scikit-learn MLP; otherwise the log of ``predict_proba`` (binary: the
        log-odds of ``classes_[1]``; multiclass: centred log-probabilities).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.
    ValueError
        If the output contains NaN or infinity.
    """
    check_is_fitted(estimator)
    if is_classifier(estimator):
        if hasattr(estimator, "decision_function"):
            raw = estimator.decision_function(X)
        elif hasattr(estimator, "coefs_") and hasattr(estimator, "intercepts_"):
            raw = _mlp_logits(estimator, X)
        elif hasattr(estimator, "predict_proba"):
            proba = np.clip(np.asarray(estimator.predict_proba(X), dtype=np.float64),
                            _PROBA_EPS, 1.0)
            logp = np.log(proba)
            if logp.shape[1] == 2:
                raw = logp[:, 1] - logp[:, 0]
            else:
                raw = logp - logp.mean(axis=1, keepdims=True)
        else:
            raise TypeError(
                f"{type(estimator).__name__} is a classifier without decision_function "
                "or predict_proba; cannot obtain raw outputs for coded prediction."
            )
    else:
        raw = estimator.predict(X)
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 1:
        raw = raw[:, None]
    elif raw.ndim != 2:
        raise ValueError(f"raw outputs must be 1-D or 2-D, got shape {raw.shape}.")
    if not np.all(np.isfinite(raw)):
        raise ValueError(
            f"{type(estimator).__name__} produced non-finite outputs (NaN or inf); "
            "coded prediction needs finite raw outputs."
        )
    return raw


def proba_from_raw(raw):
    """Class probabilities from raw outputs that are logits (sigmoid / softmax).

    Parameters
    ----------
    raw : ndarray of shape (n, d)
        One column: the log-odds of ``classes_[1]``; several: logits.

    Returns
    -------
    proba : ndarray of shape (n, max(d, 2))
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.shape[1] == 1:
        p1 = 1.0 / (1.0 + np.exp(-raw[:, 0]))
        return np.column_stack([1.0 - p1, p1])
    z = np.exp(raw - raw.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def raw_gives_proba(estimator, X, atol=1e-6):
    """Whether :func:`proba_from_raw` of ``raw_output`` reproduces ``predict_proba`` on ``X``.

    True for classifiers whose raw output is a logit (logistic losses:
    dartboost and scikit-learn boosting, logistic regression, MLPs, and the
    log-probability fallback); False for margins of other losses (e.g. SVMs)
    or models without ``predict_proba``. Checked on data, not by class name,
    so a server serves probabilities from (possibly decoded) raw outputs only
    where that is exact for the base model.
    """
    if not is_classifier(estimator) or not hasattr(estimator, "predict_proba"):
        return False
    try:
        expect = np.asarray(estimator.predict_proba(X), dtype=np.float64)
        got = proba_from_raw(raw_output(estimator, X))
    except Exception:  # noqa: BLE001 - e.g. predict_proba unavailable for this config
        return False
    return got.shape == expect.shape and bool(np.allclose(got, expect, atol=atol, rtol=0))


def code_matrix(k, r):
    """Encoding weights ``A`` of shape (r, k) for r parities over k slots.

    Row 0 is all ones (ParM's plain sum); row ``j`` holds the j-th powers of
    the distinct positive nodes ``x_i = (i + 1) / k``. A Vandermonde matrix on
    distinct *positive* nodes is totally positive: every square submatrix,
    whatever rows (parities) and columns (lost slots) it takes, has a positive
    determinant. So the code is MDS: any m <= r lost slots are determined by
    any m answered parities. (Nodes symmetric around 0, e.g. Chebyshev nodes,
    put a node at exactly 0 for odd k, and then parity j >= 1 carries nothing
    about that slot.) Among the positive node sets we tried, evenly spaced
    nodes in (0, 1] gave the smallest worst-case error amplification
    (:func:`decode_amplification`) for k <= 12, r <= 4.
    """
    if k < 1 or r < 1:
        raise ValueError(f"code_matrix needs k >= 1 and r >= 1, got k={k}, r={r}.")
    nodes = np.arange(1, k + 1, dtype=np.float64) / k
    return np.vander(nodes, N=r, increasing=True).T.copy()


# A system worse conditioned than this is treated as singular whatever the
# caller's amplification guard: its solution is dominated by rounding.
_MAX_CONDITION = 1e10


def _decode_system(A, available):
    """Rows (answered parities), missing slots and the matrix that links them."""
    r, k = A.shape
    available = np.asarray(available, dtype=bool)
    missing = np.flatnonzero(~available[:k])
    rows = np.flatnonzero(available[k:])
    return rows, missing, A[np.ix_(rows, missing)]


def decode_amplification(A, available):
    """Error amplification of decoding the missing slots from the answered outputs.

    A decoded slot's error is a linear combination of the answered parity
    models' errors, with the weights of its row of the pseudo-inverse of the
    sub-system. The amplification is the largest of those rows' Euclidean
    norms: for independent parity errors of standard deviation s, no decoded
    slot has an error standard deviation above ``amplification * s``. ParM's
    r = 1 subtraction has amplification 1.

    Parameters
    ----------
    A : ndarray of shape (r, k)
    available : bool array of shape (k + r,)

    Returns
    -------
    amplification : float
        0.0 when no slot is missing, ``inf`` when the answered parities do
        not determine the missing slots.
    """
    rows, missing, sub = _decode_system(A, available)
    if missing.size == 0:
        return 0.0
    if rows.size < missing.size:
        return float("inf")
    s = np.linalg.svd(sub, compute_uv=False)
    if s[-1] <= 0 or s[0] / s[-1] > _MAX_CONDITION:
        return float("inf")
    return float(np.sqrt((np.linalg.pinv(sub) ** 2).sum(axis=1)).max())


def linear_decode(A, base_outputs, parity_outputs, available, max_amplification=None):
    """Rebuild missing slot outputs from available base and parity outputs.

    Solves, per query row and output column, the linear system
    ``sum_{i missing} A[j, i] u_i = P_j - sum_{i available} A[j, i] F_i`` over
    the available parities ``j`` in the least-squares sense (exact when as
    many parities as erasures are available, averaged when more are).

    Parameters
    ----------
    A : ndarray of shape (r, k)
        Code matrix.
    base_outputs : ndarray of shape (k, n, d)
        Outputs of the k slots; rows of unavailable slots are ignored.
    parity_outputs : ndarray of shape (r, n, d)
        Parity outputs; rows of unavailable parities are ignored.
    available : ndarray of bool, shape (k + r,)
        Availability of the k base slots followed by the r parities.
    max_amplification : float, default=None
        Conditioning guard: a pattern whose :func:`decode_amplification`
        exceeds it is not decoded (reported unrecoverable), because the
        answered outputs do not determine the lost ones well. ``None``
        refuses only numerically singular systems.

    Returns
    -------
    outputs : ndarray of shape (k, n, d)
        Base outputs with recoverable missing slots filled in; slots that
        cannot be recovered are NaN.
    reconstructed : ndarray of bool, shape (k,)
        True for slots that were missing and have been rebuilt.
    recovered : bool
        False when the missing slots are not determined (too few parities,
        or an amplification above the guard); those slots stay NaN.
    """
    r, k = A.shape
    available = np.asarray(available, dtype=bool)
    rows, missing, sub = _decode_system(A, available)
    outputs = np.array(base_outputs, dtype=np.float64, copy=True)
    outputs[missing] = np.nan
    reconstructed = np.zeros(k, dtype=bool)
    if missing.size == 0:
        return outputs, reconstructed, True
    amp = decode_amplification(A, available)
    limit = np.inf if max_amplification is None else float(max_amplification)
    if not amp <= limit or not np.isfinite(amp):
        return outputs, reconstructed, False
    present = np.flatnonzero(available[:k])
    _, n, d = outputs.shape
    # rhs[j] = P_j - sum over available slots of A[j, i] * F_i
    rhs = np.asarray(parity_outputs, dtype=np.float64)[rows].reshape(rows.size, n * d)
    if present.size:
        rhs = rhs - A[np.ix_(rows, present)] @ outputs[present].reshape(present.size, n * d)
    sol = np.linalg.pinv(sub) @ rhs
    outputs[missing] = sol.reshape(missing.size, n, d)
    reconstructed[missing] = True
    return outputs, reconstructed, True


# --------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------


class _BaseEncoder(BaseEstimator):
    """Maps a group (k, n, p) and a code matrix (r, k) to parity queries (r, n, q)."""

    def encode(self, X_group, A):  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, X_group, A):
        return self.encode(X_group, A)


class SumEncoder(_BaseEncoder):
    """Parity query ``j`` is the weighted sum ``sum_i A[j, i] x_i`` (ParM's sum).

    With r = 1 this is the plain sum of the k feature vectors; the parity
    query has the same number of features as a base query.
    """

    def encode(self, X_group, A):
        return np.einsum("rk,knp->rnp", A, X_group)


class ConcatEncoder(_BaseEncoder):
    """Parity query is the k feature vectors side by side (``k * p`` features).

    Tabular features have no spatial structure to downsample, so stacking
    loses nothing and lets the parity model see every query. All r parity
    queries are identical: the code weights enter only through the parity
    models' targets (weighting the features instead would mix the code's
    conditioning into the parity models' inputs).
    """

    def encode(self, X_group, A):
        k, n, p = X_group.shape
        P = np.transpose(X_group, (1, 0, 2)).reshape(n, k * p)
        return np.broadcast_to(P, (A.shape[0], n, k * p)).copy()


def _area_matrix(n_in, n_out):
    """(n_out, n_in) matrix averaging input cells by overlap area (exact for any ratio)."""
    M = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for o in range(n_out):
        lo, hi = o * scale, (o + 1) * scale
        for i in range(int(np.floor(lo)), int(np.ceil(hi))):
            M[o, i] = min(hi, i + 1) - max(lo, i)
    return M / scale


class ImageConcatEncoder(_BaseEncoder):
    """ParM's image code: downsample the k images and tile them into one image.

    The k images are laid out on a grid of ``ceil(sqrt(k))`` columns and as
    many rows as needed; each is shrunk by area averaging to one grid cell,
    so the parity query has the shape of a base query. Empty cells (k not
    filling the grid) are zero.

    Parameters
    ----------
    image_shape : tuple of int
        ``(H, W)`` or ``(H, W, C)``; feature vectors are these images
        flattened in C order (as ``load_digits().data`` is for (8, 8)).
    """

    def __init__(self, image_shape=(8, 8)):
        self.image_shape = image_shape

    def _shape(self, p):
        shape = tuple(int(s) for s in self.image_shape)
        if len(shape) not in (2, 3) or int(np.prod(shape)) != p:
            raise ValueError(
                f"image_shape={self.image_shape} does not match {p} features per query; "
                "give (H, W) or (H, W, C) with H*W*C equal to the number of features."
            )
        return shape

    def encode(self, X_group, A):
        k, n, p = X_group.shape
        shape = self._shape(p)
        H, W = shape[:2]
        cols = int(np.ceil(np.sqrt(k)))
        rows = int(np.ceil(k / cols))
        if H < rows or W < cols:
            raise ValueError(f"images of {H}x{W} are too small to tile {k} of them.")
        h_edges = np.linspace(0, H, rows + 1).round().astype(int)
        w_edges = np.linspace(0, W, cols + 1).round().astype(int)
        imgs = X_group.reshape((k, n) + shape)
        out = np.zeros((n,) + shape)
        for i in range(k):
            gr, gc = divmod(i, cols)
            h0, h1 = h_edges[gr], h_edges[gr + 1]
            w0, w1 = w_edges[gc], w_edges[gc + 1]
            Rh, Rw = _area_matrix(H, h1 - h0), _area_matrix(W, w1 - w0)
            # (h_out, H) @ img (H, W, ...) @ (W, w_out) done with einsum so a
            # channel axis rides along.
            out[:, h0:h1, w0:w1] = np.einsum("ah,nhw...,bw->nab...", Rh, imgs[i], Rw)
        P = out.reshape(n, p)
        return np.broadcast_to(P, (A.shape[0], n, p)).copy()


class FunctionEncoder(_BaseEncoder):
    """Encoder from a user callable.

    Parameters
    ----------
    func : callable
        ``func(X_group)`` with ``X_group`` of shape (k, n, p), returning the
        parity queries as (n, q) (used for every parity) or (r, n, q). Use a
        module-level function if the coded predictor must be pickled.
    """

    def __init__(self, func=None):
        self.func = func

    def encode(self, X_group, A):
        if not callable(self.func):
            raise TypeError(f"FunctionEncoder needs a callable, got {self.func!r}.")
        P = np.asarray(self.func(X_group), dtype=np.float64)
        r, n = A.shape[0], X_group.shape[1]
        if P.ndim == 2:
            P = np.broadcast_to(P, (r,) + P.shape).copy()
        if P.ndim != 3 or P.shape[:2] != (r, n):
            raise ValueError(
                f"encoder function must return shape (n, q) or (r, n, q) = ({r}, {n}, q), "
                f"got {P.shape}."
            )
        return P


_ENCODERS = {"sum": SumEncoder, "concat": ConcatEncoder, "image": ImageConcatEncoder}


def check_encoder(encoder, n_features=None):
    """Resolve the ``encoder`` parameter to an encoder object.

    ``"sum"``, ``"concat"``, ``"image"`` (square images inferred from the
    number of features), an encoder instance, or a callable.
    """
    if isinstance(encoder, str):
        if encoder not in _ENCODERS:
            raise ValueError(
                f"encoder={encoder!r} is not one of {sorted(_ENCODERS)}, an encoder object "
                "or a callable."
            )
        if encoder == "image":
            side = int(round(np.sqrt(n_features))) if n_features else 0
            if side * side != n_features:
                raise ValueError(
                    f"encoder='image' infers square images, but {n_features} features is not "
                    "a square; pass ImageConcatEncoder(image_shape=...)."
                )
            return ImageConcatEncoder(image_shape=(side, side))
        return _ENCODERS[encoder]()
    if isinstance(encoder, _BaseEncoder):
        return encoder
    if callable(encoder):
        return FunctionEncoder(encoder)
    raise TypeError(f"encoder must be a string, an encoder object or a callable, got {encoder!r}.")


def check_k_r(k, r, k_max=None):
    """Validate the code parameters k (group size) and r (number of parities)."""
    for name, val, lo in (("k", k, 2), ("r", r, 1)):
        if not isinstance(val, numbers.Integral) or isinstance(val, bool) or val < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {val!r}.")
    if r > k:
        raise ValueError(f"r={r} parities for k={k} slots: r must not exceed k.")
    if k_max is not None and k > k_max:
        raise ValueError(f"k must be <= {k_max}, got {k}.")

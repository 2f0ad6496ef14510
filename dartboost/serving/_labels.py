"""Label (string) categorical columns through the serving pool.

A dartboost model fitted on a frame with string or ``category`` columns
encodes their labels itself (:mod:`dartboost._categorical`). The pool moves
queries between processes as float64 arrays (batches are stacked, padded
with a filler row and summed for the parity models), so the HTTP front end
turns each label into its *code* -- its position in the base model's
category list, ``-1`` for a label the model never saw, NaN for a missing one
-- with the same function the estimator uses, and the worker turns the
codes back into labels right before calling a model (:class:`CodesRawOutput`).
Any model the pool runs (the base, a replica, a backup fitted on the same
frame) therefore sees exactly the labels the client sent.
"""
import numpy as np

from .._categorical import _encode

__all__ = ["label_columns", "encode_labels", "encode_frame", "CodesRawOutput"]


class _Unseen:
    """The label a code of ``-1`` (or any code that names no category)
    decodes to: equal to no category, so the model encodes it as unseen."""

    __slots__ = ()

    def __reduce__(self):
        return (_unseen, ())

    def __repr__(self):
        return "<unseen label>"


_UNSEEN = _Unseen()


def _unseen():
    return _UNSEEN


def label_columns(estimator):
    """``{column: category list}`` of the columns ``estimator`` reads as labels,
    or ``None`` when it has none (then queries are plain numbers)."""
    cats = getattr(estimator, "_categories", None)
    if not isinstance(cats, list) or not any(c is not None for c in cats):
        return None
    return {j: list(c) for j, c in enumerate(cats) if c is not None}


def encode_labels(column, categories):
    """Codes (float64) of one column of JSON values against ``categories``:
    the estimator's own encoding (:func:`dartboost._categorical._encode`)."""
    return _encode(np.asarray(column, dtype=object), categories)


def encode_frame(X, labels, feature_names=None):
    """Queries holding labels (a DataFrame, or an object array) -> float64
    codes ``(n, p)``: what :class:`dartboost.serving.CodedPool` takes from
    Python callers. A frame's columns are taken by the model's feature names
    when it has them."""
    if hasattr(X, "iloc"):
        if feature_names is not None and set(map(str, X.columns)) >= set(feature_names):
            X = X[[c for name in feature_names for c in X.columns if str(c) == name]]
        values = X.to_numpy(dtype=object)
    else:
        values = np.asarray(X, dtype=object)
    if values.ndim == 1:
        values = values.reshape(1, -1)
    if values.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {values.shape}")
    out = np.empty(values.shape)
    for j in range(values.shape[1]):
        if j in labels:
            out[:, j] = encode_labels(values[:, j], labels[j])
            continue
        try:
            out[:, j] = np.asarray(values[:, j], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {j} is numeric in the model: {exc}") from None
    return out


class CodesRawOutput:
    """``raw_output(estimator, X)`` for queries whose label columns hold codes.

    Parameters
    ----------
    raw_output : callable
        ``raw_output(estimator, X) -> (n, d)`` on the estimator's own input.
    labels : dict
        :func:`label_columns` of the base model (the codes' meaning).
    feature_names : sequence of str or None
        The base model's feature names: the decoded queries are a DataFrame
        with these columns (models fitted on a frame check them).
    """

    def __init__(self, raw_output, labels, feature_names=None):
        self.raw_output = raw_output
        self.labels = {int(j): list(c) for j, c in labels.items()}
        self.feature_names = None if feature_names is None else [str(n) for n in feature_names]

    def decode(self, X):
        """The queries with their codes replaced by labels (a DataFrame when
        the model has feature names, else an object array)."""
        X = np.asarray(X, dtype=np.float64)
        columns = {}
        for j in range(X.shape[1]):
            cats = self.labels.get(j)
            if cats is None:
                columns[j] = X[:, j]
                continue
            # labels, then the unseen one and None: a code that names no
            # category (-1, a filler row's mean) takes the first, NaN the second
            table = np.array(cats + [_UNSEEN, None], dtype=object)
            code = X[:, j]
            index = np.full(code.shape, len(cats), dtype=np.intp)
            named = (code >= 0) & (code < len(cats)) & (code == np.floor(code))
            index[named] = code[named].astype(np.intp)
            index[np.isnan(code)] = len(cats) + 1
            columns[j] = table[index]
        if self.feature_names is not None:
            import pandas as pd
            return pd.DataFrame({name: columns[j] for j, name in enumerate(self.feature_names)},
                                columns=self.feature_names)
        out = np.empty(X.shape, dtype=object)
        for j, col in columns.items():
            out[:, j] = col
        return out

    def __call__(self, estimator, X):
        return self.raw_output(estimator, self.decode(X))

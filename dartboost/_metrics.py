"""Evaluation metrics of ``fit``: LightGBM's names, or callables.

Every metric is evaluated on one :class:`EvalData` (a data set with its
targets in the user's layout) and the predictions of the model so far, and
returns a list of ``(name, value, is_higher_better)``. Built-in metrics and
user callables see the same arguments:

- regression: ``y_true`` ``(n,)`` (or ``(n, n_outputs)``), ``y_pred`` the
  predictions in target units (after the link, e.g. ``exp`` for Poisson);
- classification: ``y_true`` class indices ``0 .. n_classes-1`` (positions
  in ``classes_``), ``y_pred`` the probability of class 1 ``(n,)`` for
  binary, the ``(n, n_classes)`` probabilities for multiclass (LightGBM's
  sklearn layout);
- ranking: ``y_true`` the grades, ``y_pred`` the scores, and a fourth
  argument ``group`` (query sizes in row order).

A callable ``f(y_true, y_pred, sample_weight[, group]) -> (name, value,
is_higher_better)`` (or a list of such tuples) is LightGBM's sklearn
convention.
"""
import numbers

import numpy as np
from scipy.special import xlogy

_EPS = 1e-15


class EvalData:
    """One evaluated data set.

    Parameters
    ----------
    name : str
    y_true : ndarray
        Targets in the user's layout (see the module docstring).
    sample_weight : ndarray or None
    extra : tuple
        Further positional arguments of callables (the ranker's ``group``).
    target : object, optional
        The estimator's encoded target, for built-ins that need it (NDCG).
    """

    def __init__(self, name, y_true, sample_weight, extra=(), target=None):
        self.name = name
        self.y_true = y_true
        self.sample_weight = sample_weight
        self.extra = tuple(extra)
        self.target = target


def _wmean(values, sample_weight):
    """Weighted mean over rows, then the plain mean over outputs."""
    return float(np.mean(np.average(values, axis=0, weights=sample_weight)))


def _l2(d, p):
    return _wmean((d.y_true - p) ** 2, d.sample_weight)


def _rmse(d, p):
    return float(np.sqrt(_l2(d, p)))


def _l1(d, p):
    return _wmean(np.abs(d.y_true - p), d.sample_weight)


def _mape(d, p):
    # LightGBM's convention: |y - p| / max(1, |y|), finite for y = 0
    return _wmean(np.abs(d.y_true - p) / np.maximum(1.0, np.abs(d.y_true)), d.sample_weight)


def _poisson(d, p):
    mu = np.maximum(p, _EPS)
    return _wmean(mu - d.y_true * np.log(mu), d.sample_weight)


def _gamma(d, p):
    # LightGBM's "gamma": the negative log-likelihood y / mu + log(mu)
    mu = np.maximum(p, _EPS)
    return _wmean(d.y_true / mu + np.log(mu), d.sample_weight)


def _positive_targets(d, metric):
    if np.any(d.y_true <= 0):
        raise ValueError(f"eval_metric {metric!r} needs targets y > 0; eval set {d.name!r} "
                         "has y <= 0.")


def _gamma_deviance(d, p):
    # the mean unit deviance 2 (y/mu - log(y/mu) - 1), scikit-learn's
    # mean_gamma_deviance (LightGBM reports the sum instead of the mean)
    _positive_targets(d, "gamma_deviance")
    ratio = d.y_true / np.maximum(p, _EPS)
    return _wmean(2.0 * (ratio - np.log(ratio) - 1.0), d.sample_weight)


def _tweedie_metric(rho):
    def tweedie(d, p):
        # LightGBM's "tweedie": the negative log-likelihood up to terms free of mu
        mu = np.maximum(p, _EPS)
        val = -d.y_true * mu ** (1 - rho) / (1 - rho) + mu ** (2 - rho) / (2 - rho)
        return _wmean(val, d.sample_weight)
    return tweedie


def _tweedie_deviance_metric(rho):
    def tweedie_deviance(d, p):
        # scikit-learn's mean_tweedie_deviance for 1 < power < 2
        mu = np.maximum(p, _EPS)
        y = d.y_true
        dev = 2.0 * (np.maximum(y, 0) ** (2 - rho) / ((1 - rho) * (2 - rho))
                     - y * mu ** (1 - rho) / (1 - rho) + mu ** (2 - rho) / (2 - rho))
        return _wmean(dev, d.sample_weight)
    return tweedie_deviance


def _proba_matrix(p):
    """``(n, n_classes)`` probabilities from either classification layout."""
    return np.column_stack([1.0 - p, p]) if p.ndim == 1 else p


def _multi_logloss(d, p):
    proba = _proba_matrix(p)
    picked = proba[np.arange(proba.shape[0]), d.y_true.astype(np.intp)]
    return _wmean(-np.log(np.clip(picked, _EPS, None)), d.sample_weight)


def _multi_error(d, p):
    wrong = np.argmax(_proba_matrix(p), axis=1) != d.y_true
    return _wmean(wrong.astype(np.float64), d.sample_weight)


def _binary_logloss(d, p):
    p = np.clip(p, _EPS, 1 - _EPS)
    return _wmean(-(xlogy(d.y_true, p) + xlogy(1 - d.y_true, 1 - p)), d.sample_weight)


def _binary_error(d, p):
    return _wmean(((p > 0.5) != (d.y_true > 0.5)).astype(np.float64), d.sample_weight)


def _auc(d, p):
    from sklearn.metrics import roc_auc_score
    if np.unique(d.y_true).size < 2:
        raise ValueError(f"auc is undefined on eval set {d.name!r}: it holds one class only.")
    return float(roc_auc_score(d.y_true, p, sample_weight=d.sample_weight))


def _average_precision(d, p):
    from sklearn.metrics import average_precision_score
    return float(average_precision_score(d.y_true, p, sample_weight=d.sample_weight))


def _quantile_metric(q):
    def pinball(d, p):
        diff = d.y_true - p
        return _wmean(np.where(diff >= 0, q * diff, (q - 1) * diff), d.sample_weight)
    return pinball


def _huber_metric(alpha):
    def huber(d, p):
        # delta as the loss chooses it: the alpha-quantile of |residual|
        diff = np.abs(d.y_true - p)
        delta = max(float(np.quantile(diff, alpha)), np.finfo(np.float64).tiny)
        val = np.where(diff <= delta, 0.5 * diff ** 2, delta * (diff - 0.5 * delta))
        return _wmean(val, d.sample_weight)
    return huber


def _ndcg_metric(k, n_threads):
    def ndcg(d, p):
        return d.target.ndcg(p, k, n_threads)
    return ndcg


#: canonical name -> aliases, per task (documented in docs/guide.md)
REGRESSION_METRICS = {"l2": ("mse", "mean_squared_error", "regression"),
                      "rmse": ("root_mean_squared_error",),
                      "l1": ("mae", "mean_absolute_error"),
                      "mape": ("mean_absolute_percentage_error",),
                      "poisson": (), "quantile": (), "huber": (),
                      "gamma": (), "gamma_deviance": (),
                      "tweedie": (), "tweedie_deviance": ()}
CLASSIFICATION_METRICS = {"binary_logloss": ("binary",), "binary_error": (),
                          "auc": (), "average_precision": (),
                          "multi_logloss": ("multiclass", "softmax"),
                          "multi_error": ()}
RANKING_METRICS = {"ndcg": ("lambdarank",)}


def canonical_name(name, table):
    """The canonical metric name of ``name`` (or an alias) in ``table``."""
    for canon, aliases in table.items():
        if name == canon or name in aliases:
            return canon
    return None


class Metric:
    """A named metric ``fn(data, y_pred) -> float``."""

    def __init__(self, name, fn, higher_is_better):
        self.name = name
        self.fn = fn
        self.higher_is_better = higher_is_better

    def __call__(self, data, y_pred):
        return [(self.name, self.fn(data, y_pred), self.higher_is_better)]


class CallableMetric:
    """A user's ``f(y_true, y_pred, sample_weight[, group])``; its results
    are checked so a malformed one fails with its name, not deep in the loop."""

    def __init__(self, func):
        self.func = func
        self.name = getattr(func, "__name__", repr(func))

    def __call__(self, data, y_pred):
        out = self.func(data.y_true, y_pred, data.sample_weight, *data.extra)
        results = [out] if isinstance(out, tuple) else out
        if not isinstance(results, list) or not results:
            raise TypeError(f"eval_metric {self.name} must return (name, value, "
                            f"is_higher_better) or a non-empty list of them, got {out!r}.")
        checked = []
        for res in results:
            if not (isinstance(res, tuple) and len(res) == 3 and isinstance(res[0], str)
                    and isinstance(res[1], numbers.Real) and isinstance(res[2], (bool, np.bool_))):
                raise TypeError(f"eval_metric {self.name} returned {res!r}; expected a tuple "
                                "(name: str, value: float, is_higher_better: bool).")
            if not np.isfinite(res[1]):
                raise ValueError(f"eval_metric {self.name} returned a non-finite value "
                                 f"{res[1]!r} for {res[0]!r} on eval set {data.name!r}.")
            checked.append((res[0], float(res[1]), bool(res[2])))
        return checked


def as_metric_list(eval_metric):
    """``eval_metric`` (None, a str, a callable or a list of them) as a list."""
    if eval_metric is None:
        return []
    items = eval_metric if isinstance(eval_metric, (list, tuple)) else [eval_metric]
    for i, item in enumerate(items):
        if not (isinstance(item, str) or callable(item)):
            raise TypeError(f"eval_metric[{i}] is a {type(item).__name__}; expected a metric "
                            "name or a callable f(y_true, y_pred, sample_weight).")
    return list(items)

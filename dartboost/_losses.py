"""Losses: baselines, gradients (compiled), loss values and leaf refits.

Raw scores are kept as an array of shape ``(n_trees_per_iteration, n_samples)``
(one row per output), the layout the gradient kernels and the grower read
without copies. Targets are stored in the same layout (``(K, n)``) except for
multiclass, where ``y`` holds class indices of shape ``(n,)``.
"""
import numpy as np
from scipy.special import expit, logsumexp, softmax

from ._cext import _loss
from ._common import threads_for

_NO_WEIGHTS = np.empty(0, dtype=np.float64)


def _weights_or_empty(sample_weight):
    return _NO_WEIGHTS if sample_weight is None else sample_weight


def weighted_quantile(values, q, sample_weight=None):
    """``q``-quantile of ``values`` (lower, by cumulative weight)."""
    if values.size == 0:
        return 0.0
    if sample_weight is None:
        return float(np.quantile(values, q, method="inverted_cdf"))
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(sample_weight[order])
    idx = np.searchsorted(cum, q * cum[-1], side="left")
    return float(values[order[min(idx, values.size - 1)]])


def _mean(values, sample_weight):
    return float(np.average(values, weights=sample_weight))


class BaseLoss:
    """A loss for raw scores of shape ``(K, n)``."""

    #: refit leaf values after growth (for losses whose Newton step is poor)
    refits_leaves = False
    #: without sample weights every hessian is 1 (histograms skip summing them)
    unit_hessians = False
    is_multiclass = False

    def __init__(self, n_outputs=1):
        self.n_trees_per_iteration = n_outputs

    def baseline(self, y, sample_weight):
        """Constant raw score minimising the loss, shape ``(K,)``."""
        raise NotImplementedError

    #: name of the loss in the compiled kernel ``_loss.gradient_hessian``
    kernel_name = None

    def kernel_param(self):
        """The loss's parameter for the compiled kernel (quantile, delta)."""
        return 0.0

    def gradients(self, y, raw, sample_weight, n_threads, gradients, hessians):
        """Fill float32 ``gradients``/``hessians`` of shape ``(K, n)``."""
        sw = _weights_or_empty(sample_weight)
        n_threads = threads_for(4 * raw.shape[1], n_threads)
        param = self.kernel_param()
        for k in range(self.n_trees_per_iteration):
            _loss.gradient_hessian(self.kernel_name, y[k], raw[k], sw, param, n_threads,
                                   gradients[k], hessians[k])

    def loss(self, y, raw, sample_weight=None):
        """Weighted mean loss (lower is better)."""
        raise NotImplementedError

    def predict(self, raw):
        """Map raw scores ``(K, n)`` to predictions in target units."""
        return raw

    def predict_rows(self, raw, n_threads=1):
        """:meth:`predict` laid out one row per sample, ``(n, K)`` (C order:
        the layout ``predict_proba`` returns)."""
        return np.ascontiguousarray(self.predict(raw).T)

    def prepare(self, y, raw, sample_weight):
        """Hook called once per iteration before gradients (e.g. Huber's delta)."""


class SquaredError(BaseLoss):
    name = "squared_error"
    kernel_name = "squared_error"
    unit_hessians = True

    def baseline(self, y, sample_weight):
        return np.array([_mean(y[k], sample_weight) for k in range(y.shape[0])])

    def loss(self, y, raw, sample_weight=None):
        return _mean(np.mean((y - raw) ** 2, axis=0) * 0.5, sample_weight)


class AbsoluteError(BaseLoss):
    name = "absolute_error"
    kernel_name = "absolute_error"
    unit_hessians = True
    refits_leaves = True
    quantile = 0.5

    def baseline(self, y, sample_weight):
        return np.array([weighted_quantile(y[0], self.quantile, sample_weight)])

    def loss(self, y, raw, sample_weight=None):
        return _mean(np.abs(y[0] - raw[0]), sample_weight)

    def leaf_value(self, residuals, sample_weight):
        """Refit of a leaf: the (weighted) quantile of ``y - raw`` in it."""
        return weighted_quantile(residuals, self.quantile, sample_weight)


class Quantile(AbsoluteError):
    name = "quantile"
    kernel_name = "quantile"

    def __init__(self, quantile=0.5):
        super().__init__(1)
        self.quantile = quantile

    def kernel_param(self):
        return self.quantile

    def loss(self, y, raw, sample_weight=None):
        diff = y[0] - raw[0]
        q = self.quantile
        return _mean(np.where(diff >= 0, q * diff, (q - 1) * diff), sample_weight)


class Huber(BaseLoss):
    """Huber loss; ``delta`` is the ``alpha``-quantile of ``|y - raw|``,
    recomputed each iteration (scikit-learn's GradientBoosting rule), so it
    adapts to the scale of the target."""

    name = "huber"
    kernel_name = "huber"
    unit_hessians = True

    def __init__(self, alpha=0.9):
        super().__init__(1)
        self.alpha = alpha
        self.delta = None

    def baseline(self, y, sample_weight):
        return np.array([weighted_quantile(y[0], 0.5, sample_weight)])

    def prepare(self, y, raw, sample_weight):
        self.delta = max(weighted_quantile(np.abs(y[0] - raw[0]), self.alpha, sample_weight),
                         np.finfo(np.float64).tiny)

    def kernel_param(self):
        return self.delta

    def loss(self, y, raw, sample_weight=None):
        diff = np.abs(y[0] - raw[0])
        delta = self.delta if self.delta is not None else \
            weighted_quantile(diff, self.alpha, sample_weight)
        val = np.where(diff <= delta, 0.5 * diff ** 2, delta * (diff - 0.5 * delta))
        return _mean(val, sample_weight)


class Poisson(BaseLoss):
    """Poisson deviance with a log link: ``raw = log(mu)``."""

    name = "poisson"
    kernel_name = "poisson"

    def baseline(self, y, sample_weight):
        return np.array([np.log(_mean(y[0], sample_weight))])

    def loss(self, y, raw, sample_weight=None):
        return _mean(np.exp(raw[0]) - y[0] * raw[0], sample_weight)

    def predict(self, raw):
        return np.exp(raw)


class Gamma(Poisson):
    """Gamma negative log-likelihood with a log link (LightGBM's ``gamma``):
    ``y / mu + log(mu)`` per row, ``raw = log(mu)``; targets must be > 0."""

    name = "gamma"
    kernel_name = "gamma"

    def loss(self, y, raw, sample_weight=None):
        return _mean(y[0] * np.exp(-raw[0]) + raw[0], sample_weight)


class Tweedie(Poisson):
    """Tweedie negative log-likelihood (up to terms free of ``mu``) with a log
    link, LightGBM's ``tweedie``: ``-y mu^(1-rho)/(1-rho) + mu^(2-rho)/(2-rho)``
    for the variance power ``rho`` in (1, 2) (compound Poisson-gamma: exact
    zeros and positive amounts)."""

    name = "tweedie"
    kernel_name = "tweedie"

    def __init__(self, variance_power=1.5):
        super().__init__(1)
        self.variance_power = variance_power

    def kernel_param(self):
        return self.variance_power

    def loss(self, y, raw, sample_weight=None):
        rho = self.variance_power
        val = (-y[0] * np.exp((1 - rho) * raw[0]) / (1 - rho)
               + np.exp((2 - rho) * raw[0]) / (2 - rho))
        return _mean(val, sample_weight)


class BinaryLogLoss(BaseLoss):
    name = "log_loss"
    kernel_name = "binary_log_loss"

    def baseline(self, y, sample_weight):
        p = np.clip(_mean(y[0], sample_weight), 1e-15, 1 - 1e-15)
        return np.array([np.log(p / (1 - p))])

    def loss(self, y, raw, sample_weight=None):
        # log(1 + exp(raw)) - y * raw, computed stably
        return _mean(np.logaddexp(0, raw[0]) - y[0] * raw[0], sample_weight)

    def predict(self, raw):
        p = expit(raw[0])
        return np.vstack([1 - p, p])

    def predict_rows(self, raw, n_threads=1):
        # compiled and parallel: on many cores the probabilities of a large
        # batch otherwise cost a tenth of the prediction itself
        out = np.empty((raw.shape[1], 2))
        _loss.binary_proba(np.ascontiguousarray(raw[0]), out,
                           threads_for(8 * raw.shape[1], n_threads))
        return out


class SoftmaxLogLoss(BaseLoss):
    """Multiclass log-loss; one tree per class per iteration."""

    name = "log_loss"
    is_multiclass = True

    def baseline(self, y, sample_weight):
        K = self.n_trees_per_iteration
        w = np.ones_like(y) if sample_weight is None else sample_weight
        prior = np.bincount(y.astype(np.intp), weights=w, minlength=K) / w.sum()
        prior = np.clip(prior, 1e-15, None)
        log_prior = np.log(prior)
        return log_prior - log_prior.mean()

    def gradients(self, y, raw, sample_weight, n_threads, gradients, hessians):
        _loss.softmax_log_loss(y, raw, _weights_or_empty(sample_weight),
                               threads_for(8 * raw.size, n_threads), gradients, hessians)

    def loss(self, y, raw, sample_weight=None):
        lse = logsumexp(raw, axis=0)
        picked = raw[y.astype(np.intp), np.arange(y.shape[0])]
        return _mean(lse - picked, sample_weight)

    def predict(self, raw):
        return softmax(raw, axis=0)


REGRESSION_LOSSES = ("squared_error", "absolute_error", "huber", "quantile", "poisson",
                     "gamma", "tweedie")
#: regression losses whose raw score is ``log(mu)`` (prediction ``exp(raw)``)
LOG_LINK_LOSSES = ("poisson", "gamma", "tweedie")


def make_regression_loss(name, n_outputs=1, quantile=None, alpha=0.9,
                         tweedie_variance_power=1.5):
    """The loss object for a regressor's ``loss`` parameter."""
    if n_outputs > 1 and name != "squared_error":
        raise ValueError(
            f"Multi-output regression (y with {n_outputs} columns) is supported only with "
            f"loss='squared_error', got loss={name!r}."
        )
    if name == "squared_error":
        return SquaredError(n_outputs)
    if name == "absolute_error":
        return AbsoluteError(1)
    if name == "huber":
        return Huber(alpha)
    if name == "quantile":
        if quantile is None:
            raise ValueError("loss='quantile' requires the 'quantile' parameter in (0, 1).")
        return Quantile(quantile)
    if name == "poisson":
        return Poisson(1)
    if name == "gamma":
        return Gamma(1)
    if name == "tweedie":
        return Tweedie(tweedie_variance_power)
    raise ValueError(f"Unknown loss {name!r}; expected one of {REGRESSION_LOSSES}.")


def make_classification_loss(n_classes):
    return BinaryLogLoss(1) if n_classes <= 2 else SoftmaxLogLoss(n_classes)


class CustomObjective(BaseLoss):
    """A user's objective ``func(y_true, y_pred[, sample_weight[, group]]) ->
    (grad, hess)`` (LightGBM's scikit-learn convention: the number of
    positional parameters says which arguments it takes).

    ``y_true`` is the target in the user's layout (class indices for
    classifiers, grades for rankers), ``y_pred`` the raw scores, ``(n,)`` for
    one output and ``(n, K)`` for ``K``; ``grad``/``hess`` have the shape of
    ``y_pred``. A two-argument ``func`` gets its output multiplied by the
    sample weights here; one with more arguments receives them (``None``
    when unweighted) and must apply them itself. The baseline is 0 (LightGBM
    does not boost from the average for a custom objective) and the link the
    identity: predictions are raw scores.

    Parameters
    ----------
    func : callable or None
        ``None`` is a loaded model's objective: it predicts but cannot train.
    n_outputs : int
    targets : callable, optional
        ``targets(y) -> (y_true, extra)``: the user's ``y_true`` and the
        arguments after ``sample_weight`` (the ranker's ``(group,)``) of the
        loss-layout targets ``y``; default :meth:`user_layout` and none.
    """

    name = "custom"

    def __init__(self, func, n_outputs=1, targets=None):
        super().__init__(n_outputs)
        self.func = func
        self.targets = targets or (lambda y: (self.user_layout(y), ()))
        self.label = getattr(func, "__name__", repr(func))

    def baseline(self, y, sample_weight):
        return np.zeros(self.n_trees_per_iteration)

    def _n_arguments(self, n_extra):
        """How many of ``(y_true, y_pred, sample_weight, *extra)`` ``func`` takes."""
        import inspect
        most = 3 + n_extra
        try:
            params = inspect.signature(self.func).parameters.values()
        except (TypeError, ValueError):  # builtins without a signature
            return 2
        if any(p.kind == p.VAR_POSITIONAL for p in params):
            return most
        n = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
        if n < 2 or n > most:
            raise TypeError(f"objective {self.label} takes {n} positional arguments; expected "
                            f"f(y_true, y_pred), f(y_true, y_pred, sample_weight)"
                            + (", or f(y_true, y_pred, sample_weight, group)" if n_extra else "")
                            + ".")
        return n

    @staticmethod
    def user_layout(values):
        """``(K, n)`` (or ``(n,)`` class indices) in the user's layout."""
        if values.ndim == 1:
            return values.copy()
        return values[0].copy() if values.shape[0] == 1 else values.T.copy()

    def gradients(self, y, raw, sample_weight, n_threads, gradients, hessians):
        if self.func is None:
            raise ValueError("This model was fitted with a callable objective, which is not "
                             "stored in model files; set objective= to train it further.")
        y_true, extra = self.targets(y)
        y_pred = self.user_layout(raw)
        n_args = self._n_arguments(len(extra))
        args = (y_true, y_pred, None if sample_weight is None else sample_weight.copy(),
                *extra)
        grad, hess = self._check_output(self.func(*args[:n_args]), y_pred.shape)
        if n_args == 2 and sample_weight is not None:
            w = sample_weight if grad.ndim == 1 else sample_weight[:, None]
            grad, hess = grad * w, hess * w
        K = self.n_trees_per_iteration
        with np.errstate(over="ignore"):  # reported below, by name
            gradients[...] = (grad[None] if K == 1 else grad.T).astype(np.float32)
            hessians[...] = (hess[None] if K == 1 else hess.T).astype(np.float32)
        if not (np.all(np.isfinite(gradients)) and np.all(np.isfinite(hessians))):
            raise ValueError(f"objective {self.label} returned gradients or hessians too "
                             "large for float32 (after weighting); rescale them.")
        if np.any(hessians.sum(axis=1, dtype=np.float64) <= 0):
            raise ValueError(f"objective {self.label} returned hessians that sum to 0 over "
                             "the rows of an output: no leaf value (-G/H) is defined.")

    def _check_output(self, out, shape):
        """``(grad, hess)`` as float64 arrays of ``shape``; any mistake names itself."""
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError(f"objective {self.label} must return a tuple (grad, hess), got "
                            f"a {type(out).__name__}"
                            + (f" of length {len(out)}." if isinstance(out, (tuple, list))
                               else "."))
        checked = []
        for what, values in zip(("grad", "hess"), out):
            try:
                arr = np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"objective {self.label} returned a {what} that is not numeric "
                                f"({exc}).") from None
            if arr.shape != shape:
                raise ValueError(f"objective {self.label} returned {what} of shape {arr.shape}; "
                                 f"expected {shape}, the shape of y_pred.")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"objective {self.label} returned a {what} with NaN or "
                                 "infinite values.")
            checked.append(arr)
        if np.any(checked[1] < 0):
            raise ValueError(f"objective {self.label} returned negative hessians; hess must "
                             "be >= 0 (a Newton step needs a convex local model).")
        return checked

    def loss(self, y, raw, sample_weight=None):
        raise ValueError("A callable objective has no loss value: early stopping with "
                         "objective=callable needs an eval_metric.")

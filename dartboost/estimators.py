"""scikit-learn estimators: thin layers over :class:`~dartboost._boosting.BaseBoosting`."""
import numbers
import warnings

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.class_weight import compute_sample_weight
from ._compat import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets

from ._boosting import BaseBoosting
from ._common import effective_n_threads
from ._losses import (REGRESSION_LOSSES, CustomObjective, make_classification_loss,
                      make_regression_loss)
from . import _metrics
from ._metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS, EvalData, Metric
from ._model_format import FormatError, check_bool, check_classes, register_model_class

_OBJECTIVE_DOC = """
    objective : callable or None, default=None
        A custom objective ``f(y_true, y_pred) -> (grad, hess)`` or
        ``f(y_true, y_pred, sample_weight) -> (grad, hess)`` (LightGBM's
        scikit-learn convention) used instead of the built-in loss.
        ``y_pred`` holds raw scores, ``(n,)`` for one output and ``(n, K)``
        for ``K``; ``grad`` and ``hess`` (``>= 0``) have its shape. Weights
        are applied to the two-argument form's output here; the
        three-argument form receives them and must apply them itself. The
        baseline is 0 and predictions are raw scores (no link). Not stored
        in model files: a loaded model predicts the same raw scores.
    base_score : float or None, default=None
        The raw score every output starts from (XGBoost's name). ``None``:
        the built-in loss's best constant (the weighted mean, median,
        log-odds or log-mean of ``y``), and 0 for a callable ``objective``.
"""

_SHARED_DOC = """
    boosting : {"dart", "mart"}, default="dart"
        ``"dart"`` drops random earlier trees each iteration (dropout);
        ``"mart"`` is plain gradient boosting (no dropout, DART knobs ignored).
    n_estimators : int, default=100
        Boosting iterations (one tree per output per iteration).
    learning_rate : float, default=0.1
        Shrinkage ``eta``; with DART it also enters the normalisation.
    max_leaf_nodes : int or None, default=31
        Leaves per tree (leaf-wise growth). ``None``: no limit.
    max_depth : int or None, default=None
        Depth limit (``None``: none).
    min_samples_leaf : int, default=20
        Minimum number of training rows in a leaf.
    min_child_weight : float, default=1e-3
        Minimum sum of hessians in a leaf.
    min_split_gain : float, default=0.0
        Minimum gain ``G_L^2/(H_L+l2) + G_R^2/(H_R+l2) - G^2/(H+l2)`` of a split.
    l2_regularization : float, default=0.0
        L2 penalty on leaf values.
    max_bins : int, default=255
        Bins per feature for non-missing values (missing values get their own).
    subsample : float, default=1.0
        Fraction of rows drawn (without replacement) for each iteration's trees.
    colsample_bytree : float, default=1.0
        Fraction of features drawn for each iteration's trees.
    colsample_bynode : float, default=1.0
        Fraction of the tree's features drawn at each split.
    drop_rate : float, default=0.1
        DART: probability of dropping each earlier iteration.
    skip_drop : float, default=0.5
        DART: probability of dropping nothing in an iteration.
    max_drop : int, default=50
        DART: at most this many iterations dropped (a uniform random subset of
        the draw); ``<= 0`` for no limit.
    one_drop : bool, default=False
        DART: drop one iteration when the draw is empty.
    sample_type : {"uniform", "weighted"}, default="uniform"
        DART: drop probability uniform or proportional to tree weight.
    normalize_type : {"tree", "forest"}, default="tree"
        DART: ``"tree"`` gives the new tree ``eta/(k+eta)`` and scales the k
        dropped ones by ``k/(k+eta)`` (XGBoost's default, LightGBM's
        ``xgboost_dart_mode=True``); ``"forest"`` gives ``eta/(1+eta)`` and
        scales dropped ones by ``1/(1+eta)``. LightGBM's default
        (``xgboost_dart_mode=False``) gives only ``eta/(k+1)`` and converges far
        more slowly; the paper's rule is ``"tree"`` with ``learning_rate=1``.
    early_stopping : "auto" or bool, default="auto"
        Stop when the validation score has not improved by ``tol`` for
        ``n_iter_no_change`` iterations and keep the best iteration's model,
        with the tree weights it had then (also for DART). ``"auto"``: on
        when ``n_iter_no_change`` or ``early_stopping_rounds`` is set, or
        ``n_samples > 10000`` (scikit-learn's rule). Passing an ``eval_set``
        never turns it on: without early stopping eval sets are only scored.
        The score is the loss, or the first ``eval_metric`` if given, on the
        *last* eval set, or else on a ``validation_fraction`` split.
    validation_fraction : float or None, default=0.1
        Share of the training data held out for early stopping when no
        ``eval_set`` is given (stratified for classifiers). ``None``: score
        on the training data.
    n_iter_no_change : int or None, default=None
        Patience of early stopping (10 when ``None``); setting it asks for
        early stopping (unless ``early_stopping=False``).
    early_stopping_rounds : int or None, default=None
        LightGBM's and XGBoost's name of ``n_iter_no_change``.
    tol : float, default=1e-7
    eval_metric : str, callable, list of them, or None, default=None
        Metrics recorded for every eval set after every iteration in
        ``evals_result_`` (see ``docs/guide.md`` for the names); a callable
        ``f(y_true, y_pred, sample_weight) -> (name, value, is_higher_better)``
        as in LightGBM's scikit-learn API. ``None``: the loss's own metric.
        Early stopping uses the first one. Not stored in model files.
    importance_type : {"gain", "split"}, default="gain"
        ``feature_importances_``: split gains weighted by the trees' current
        (DART) weights, or the number of splits.
    warm_start : bool, default=False
        Keep the fitted trees and add iterations up to ``n_estimators``.
    callbacks : list or None, default=None
        Objects with ``on_fit_begin``/``on_iteration_end``/``on_fit_end``
        methods, or LightGBM-style callables ``cb(env)`` (see
        :mod:`dartboost.callbacks`); anything else is a ``TypeError`` at fit.
    random_state : int, RandomState or None, default=None
        Seeds binning subsample, validation split, dropout and subsampling.
        An int makes fits reproducible (also across interrupted, resumed fits).
    n_jobs : int or None, default=None
        OpenMP threads (``None``: all cores of this process).
    verbose : int, default=0
        ``1``: progress bar; ``2``: one line per iteration.
    categorical_features : "from_dtype", array-like of int, bool or str, or None, \
default="from_dtype"
        Features split by category sets instead of thresholds (see
        ``docs/categorical.md``). ``"from_dtype"``: a DataFrame's pandas
        ``category``, string and object columns; else indices, a boolean mask
        or feature names; ``None``: none. Labels of such columns (any finite
        numbers, or strings and pandas categories, which are encoded) are
        categories; the ``max_bins - 1`` most frequent are kept, rarer ones
        are pooled and, like categories unseen in fit, always go right; NaN
        is missing.
    max_cat_to_onehot : int, default=4
        At most this many categories in a node: one-vs-rest splits; more:
        LightGBM's sorted many-vs-many search.
    cat_smooth : float, default=10.0
        Many-vs-many: categories are sorted by ``sum_g / (sum_h +
        cat_smooth)``, and categories with fewer rows than it are left out
        (they go right).
    cat_l2 : float, default=10.0
        Extra L2 penalty in the gain of many-vs-many splits.
    min_data_per_group : int, default=100
        Many-vs-many: rows the left set must grow by between two evaluated
        splits, and the least rows on the right.
    max_cat_threshold : int, default=32
        Most categories in the left set of a many-vs-many split.
    reg_alpha : float, default=0.0
        L1 penalty on leaf values: gradient sums are soft-thresholded by it
        (``sign(G) max(|G| - reg_alpha, 0)``) in split gains and leaf values
        (LightGBM's ``lambda_l1``).
    monotonic_cst : array-like of int of shape (n_features,), dict or None, default=None
        -1/0/1 per feature (decreasing / none / increasing), or a dict from
        feature names to those; as scikit-learn's HistGradientBoosting: split
        values are bounded so every tree, hence the raw score, is monotonic
        in each constrained feature. Not for categorical features or
        multiclass classification.
    interaction_cst : list of groups of int, "pairwise", "no_interactions" or None, \
default=None
        Feature groups that may interact (scikit-learn's semantics): the
        splits along any root-to-leaf path use features of one group only;
        features in no group form one more group.
"""


_PREDICT_OPTIONS_DOC = """
        iteration_range : (start, stop) or None, default=None
            Use only iterations ``[start, stop)`` with the weights they had
            right after iteration ``stop`` (the weight log is replayed, so
            DART's later rescalings are not applied); ``(0, t)`` is exactly
            the model after ``t`` iterations, ``(0, 0)`` the baseline only.
        raw_score : bool, default=False
            Return the raw scores (before the link: margins, log-odds,
            log-means): ``(n,)`` for one output, ``(n, K)`` for ``K``.
        pred_leaf : bool, default=False
            Return the leaf every row reaches in every tree of the range, int32
            ``(n_samples, n_trees)``, leaves numbered ``0 .. n_leaves - 1`` in
            node order (LightGBM's ``pred_leaf``; :meth:`apply` gives node
            indices in scikit-learn's shape).
        pred_contrib : bool, default=False
            Return SHAP values (:func:`dartboost.explain.shap_values`,
            LightGBM's layout): ``n_features + 1`` columns per output, the
            expected value last, one such block per output side by side;
            each block sums to the raw score.
"""


def _shared_init_params(locals_):
    return {k: locals_[k] for k in (
        "boosting", "n_estimators", "learning_rate", "max_leaf_nodes", "max_depth",
        "min_samples_leaf", "min_child_weight", "min_split_gain", "l2_regularization",
        "max_bins", "subsample", "colsample_bytree", "colsample_bynode", "drop_rate",
        "skip_drop", "max_drop", "one_drop", "sample_type", "normalize_type",
        "early_stopping", "validation_fraction", "n_iter_no_change", "early_stopping_rounds",
        "tol", "eval_metric", "importance_type", "warm_start", "callbacks", "random_state",
        "n_jobs", "verbose", "categorical_features", "max_cat_to_onehot", "cat_smooth",
        "cat_l2", "min_data_per_group", "max_cat_threshold", "reg_alpha", "monotonic_cst",
        "interaction_cst")}


@register_model_class
class DartRegressor(RegressorMixin, BaseBoosting):
    __doc__ = """Histogram gradient-boosted regression trees with DART (or MART).

    Parameters
    ----------
    loss : {"squared_error", "absolute_error", "huber", "quantile", "poisson", \
"gamma", "tweedie"}, default="squared_error"
        ``squared_error`` also accepts a 2-D ``y`` (multi-output: one tree per
        output per iteration). ``absolute_error`` and ``quantile`` refit leaf
        values to the residuals' median/quantile; ``poisson`` (``y >= 0``),
        ``gamma`` (``y > 0``) and ``tweedie`` (``y >= 0``) use a log link
        (``raw = log(mu)``, as LightGBM's objectives of these names).
    quantile : float or None, default=None
        The quantile for ``loss="quantile"``.
    alpha : float, default=0.9
        Huber: the threshold between quadratic and linear is the ``alpha``
        quantile of the absolute residuals, re-estimated each iteration.
    tweedie_variance_power : float, default=1.5
        ``loss="tweedie"``: the power ``rho`` in (1, 2) of ``Var(y) ~ mu^rho``
        (near 1: Poisson-like, near 2: gamma-like).
""" + _OBJECTIVE_DOC + _SHARED_DOC + """
    Attributes
    ----------
    n_iter_ : int
        Iterations in the fitted model (the best one with early stopping).
    n_trees_per_iteration_ : int
    train_score_, validation_score_ : list of float
        The early-stopping score (negative loss, or the first ``eval_metric``
        with higher = better) before the first and after each iteration
        (only with early stopping).
    best_iteration_ : int
    evals_result_ : dict
        ``{set_name: {metric_name: [value after each iteration]}}`` of the
        eval sets of the last ``fit`` (LightGBM's layout).
    best_score_ : dict
        ``{set_name: {metric_name: value}}`` at the kept model.
    feature_importances_ : ndarray of shape (n_features,)
    tree_weights_ : ndarray of shape (n_iter_,)
    n_features_in_ : int
    """

    _parameter_constraints = {
        **BaseBoosting._parameter_constraints,
        "loss": [StrOptions(set(REGRESSION_LOSSES))],
        "quantile": [Interval(numbers.Real, 0, 1, closed="neither"), None],
        "alpha": [Interval(numbers.Real, 0, 1, closed="neither")],
        "tweedie_variance_power": [Interval(numbers.Real, 1, 2, closed="neither")],
        "objective": [callable, None],
        "base_score": [numbers.Real, None],
    }

    def __init__(self, loss="squared_error", *, quantile=None, alpha=0.9,
                 tweedie_variance_power=1.5, objective=None, base_score=None, boosting="dart",
                 n_estimators=100, learning_rate=0.1, max_leaf_nodes=31, max_depth=None,
                 min_samples_leaf=20, min_child_weight=1e-3, min_split_gain=0.0,
                 l2_regularization=0.0, max_bins=255, subsample=1.0, colsample_bytree=1.0,
                 colsample_bynode=1.0, drop_rate=0.1, skip_drop=0.5, max_drop=50,
                 one_drop=False, sample_type="uniform", normalize_type="tree",
                 early_stopping="auto", validation_fraction=0.1, n_iter_no_change=None,
                 early_stopping_rounds=None, tol=1e-7, eval_metric=None,
                 importance_type="gain", warm_start=False, callbacks=None, random_state=None,
                 n_jobs=None, verbose=0, categorical_features="from_dtype",
                 max_cat_to_onehot=4, cat_smooth=10.0, cat_l2=10.0, min_data_per_group=100,
                 max_cat_threshold=32, reg_alpha=0.0,
                 monotonic_cst=None, interaction_cst=None):
        super().__init__(**_shared_init_params(locals()))
        self.loss = loss
        self.quantile = quantile
        self.alpha = alpha
        self.tweedie_variance_power = tweedie_variance_power
        self.objective = objective
        self.base_score = base_score

    def _check_target_domain(self, y, sample_weight, what="y"):
        """Targets outside the loss's support are an error, not a NaN model."""
        if self._objective_is_custom:
            return  # the callable's business
        if self.loss == "gamma" and np.any(y <= 0):
            raise ValueError(f"loss='gamma' requires positive targets; {what} has values <= 0.")
        if self.loss in ("poisson", "tweedie"):
            if np.any(y < 0):
                raise ValueError(f"loss={self.loss!r} requires non-negative targets; {what} "
                                 "has negative values.")
            if what == "y" and np.sum(y if sample_weight is None else y * sample_weight) <= 0:
                raise ValueError(f"loss={self.loss!r} requires targets y with a positive "
                                 "(weighted) sum: the baseline is log(mean(y)).")

    def _encode_eval_y(self, index, y, sample_weight):
        y = self._encode_y_transform(y)
        self._check_target_domain(y, sample_weight, f"eval_set[{index}]'s y")
        return y

    def _encode_y(self, y, sample_weight):
        y_1d = np.ndim(y) == 1
        y = self._encode_y_transform(y)
        self._check_target_domain(y, sample_weight)
        if not (self.warm_start and self._is_fitted()):
            self._n_outputs = y.shape[0]
            self._y_1d = y_1d
        elif y.shape[0] != self._n_outputs:
            raise ValueError(f"y has {y.shape[0]} outputs; the fitted model has "
                             f"{self._n_outputs}.")
        return y

    def _encode_y_transform(self, y):
        y = np.asarray(y, dtype=np.float64)
        return np.ascontiguousarray(y.reshape(1, -1) if y.ndim == 1 else y.T)

    def _make_loss(self):
        if self._objective_is_custom:
            return CustomObjective(self.objective if callable(self.objective) else None,
                                   self._n_outputs)
        return make_regression_loss(self.loss, self._n_outputs, self.quantile, self.alpha,
                                    self.tweedie_variance_power)

    def _extra_state(self):
        return {"n_outputs": int(self._n_outputs), "y_was_1d": bool(self._y_1d)}

    def _load_extra_state(self, header):
        K = header["n_trees_per_iteration"]
        if header.get("n_outputs") != K:
            raise FormatError(f"n_outputs: {header.get('n_outputs')!r} must equal "
                              f"n_trees_per_iteration ({K}), one tree per output")
        self._n_outputs = K
        self._y_1d = check_bool(header, "y_was_1d")
        if self._y_1d and K != 1:
            raise FormatError(f"y_was_1d: a model with {K} outputs was not fitted on a 1-D y")

    def _format(self, raw, loss=None):
        pred = (loss or self._make_loss()).predict(raw)
        return pred[0] if self._y_1d else pred.T

    # --- evaluation hooks (see BaseBoosting._metrics)
    _metric_names = tuple(REGRESSION_METRICS)
    _DEFAULT_METRICS = {"squared_error": "l2", "absolute_error": "l1", "quantile": "quantile",
                        "huber": "huber", "poisson": "poisson", "gamma": "gamma",
                        "tweedie": "tweedie"}

    def _default_metric(self):
        return self._DEFAULT_METRICS[self.loss]

    def _builtin_metric(self, name):
        canon = _metrics.canonical_name(name, REGRESSION_METRICS)
        if canon is None:
            return None
        if canon == "quantile":
            if self.quantile is None:
                raise ValueError("eval_metric 'quantile' (the pinball loss) needs the "
                                 "quantile= parameter.")
            fn = _metrics._quantile_metric(self.quantile)
        elif canon == "huber":
            fn = _metrics._huber_metric(self.alpha)
        elif canon in ("tweedie", "tweedie_deviance"):
            fn = getattr(_metrics, f"_{canon}_metric")(self.tweedie_variance_power)
        else:
            fn = getattr(_metrics, f"_{canon}")
        return Metric(canon, fn, False)

    def _eval_data(self, name, y_enc, sample_weight):
        return EvalData(name, y_enc[0] if self._y_1d else y_enc.T, sample_weight)

    def _eval_prediction(self, loss, raw):
        return self._format(raw, loss)

    def _raw_output(self, raw):
        return raw[0] if self._y_1d else raw.T

    @property
    def _apply_is_3d(self):
        return not self._y_1d

    def predict(self, X, iteration_range=None, raw_score=False, pred_leaf=False,
                pred_contrib=False):
        special = self._special_predict(X, iteration_range, raw_score, pred_leaf, pred_contrib)
        if special is not None:
            return special
        return self._format(self._raw_predict(X, iteration_range))

    predict.__doc__ = """Predicted values, shape ``(n,)`` (or ``(n, n_outputs)``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)""" + _PREDICT_OPTIONS_DOC

    def staged_predict(self, X):
        """Yield predictions after each iteration, with the weights the model
        had at that iteration."""
        loss = self._make_loss()
        for raw in self._staged_raw_predict(X):
            yield self._format(raw, loss)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


@register_model_class
class DartClassifier(ClassifierMixin, BaseBoosting):
    __doc__ = """Histogram gradient-boosted classification trees with DART (or MART).

    Binary targets use the log-loss with one tree per iteration; multiclass
    targets use the softmax log-loss with one tree per class per iteration.
    Labels may be of any type (``classes_`` keeps them).

    Parameters
    ----------
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes, ``{label: weight}`` (classes not named weigh
        1) or ``"balanced"`` (``n_samples / (n_classes * count)``), multiplied
        into ``sample_weight`` for the training rows, as scikit-learn's
        ``compute_sample_weight``; eval sets keep their own weights.
""" + _OBJECTIVE_DOC + """
        For a classifier ``y_true`` holds class indices (positions in
        ``classes_``) as floats; ``K`` is 1 for two classes, else
        ``n_classes``. As in LightGBM, :meth:`predict_proba` then returns
        the raw scores (with a warning: there is no known link);
        :meth:`predict` returns labels by scikit-learn's decision rule
        (``raw > 0`` for two classes, else the largest raw score).
""" + _SHARED_DOC + """
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_iter_ : int
    n_trees_per_iteration_ : int
    train_score_, validation_score_ : list of float
    best_iteration_ : int
    evals_result_, best_score_ : dict
        As in :class:`DartRegressor`.
    feature_importances_ : ndarray of shape (n_features,)
    tree_weights_ : ndarray of shape (n_iter_,)
    n_features_in_ : int
    """

    _is_classifier = True

    _parameter_constraints = {
        **BaseBoosting._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "objective": [callable, None],
        "base_score": [numbers.Real, None],
    }

    def __init__(self, *, class_weight=None, objective=None, base_score=None, boosting="dart", n_estimators=100, learning_rate=0.1,
                 max_leaf_nodes=31, max_depth=None, min_samples_leaf=20,
                 min_child_weight=1e-3, min_split_gain=0.0, l2_regularization=0.0,
                 max_bins=255, subsample=1.0, colsample_bytree=1.0, colsample_bynode=1.0,
                 drop_rate=0.1, skip_drop=0.5, max_drop=50, one_drop=False,
                 sample_type="uniform", normalize_type="tree", early_stopping="auto",
                 validation_fraction=0.1, n_iter_no_change=None, early_stopping_rounds=None,
                 tol=1e-7, eval_metric=None, importance_type="gain", warm_start=False,
                 callbacks=None, random_state=None, n_jobs=None, verbose=0,
                 categorical_features="from_dtype", max_cat_to_onehot=4, cat_smooth=10.0,
                 cat_l2=10.0, min_data_per_group=100, max_cat_threshold=32, reg_alpha=0.0,
                 monotonic_cst=None, interaction_cst=None):
        super().__init__(**_shared_init_params(locals()))
        self.class_weight = class_weight
        self.objective = objective
        self.base_score = base_score

    def _training_weights(self, y, sample_weight):
        if self.class_weight is None:
            return sample_weight
        check_classification_targets(y)
        weights = compute_sample_weight(self.class_weight, y)
        return weights if sample_weight is None else weights * sample_weight

    def _encode_y(self, y, sample_weight):
        check_classification_targets(y)
        if not (self.warm_start and self._is_fitted()):
            encoder = LabelEncoder().fit(y)
            self.classes_ = encoder.classes_
            if self.classes_.shape[0] < 2:
                raise ValueError(f"y contains only one class ({self.classes_.tolist()[0]!r}); a "
                                 "classifier needs at least 2 classes.")
        y_enc = self._encode_y_transform(y)
        if sample_weight is not None:
            # zero weights can leave one class only: nothing to separate, and
            # the hessians of the other class would all be zero
            weighted = np.unique(y_enc.ravel()[sample_weight > 0]).astype(np.intp)
            if weighted.size < 2:
                raise ValueError(
                    f"sample_weight is zero on every row except those of class "
                    f"{self.classes_[weighted[:1]].tolist()[0]!r}; a classifier needs at least 2 classes "
                    "with positive weight.")
        return y_enc

    def _encode_y_transform(self, y):
        check_classification_targets(y)
        y = np.asarray(y)
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, self.classes_.shape[0] - 1)
        unknown = self.classes_[idx] != y
        if np.any(unknown):
            raise ValueError(f"y contains labels not seen in training: "
                             f"{np.unique(y[unknown])[:5].tolist()}.")
        idx = idx.astype(np.float64)
        return idx.reshape(1, -1) if self.classes_.shape[0] == 2 else idx

    def _stratify_labels(self, y_enc):
        return y_enc.ravel()

    @staticmethod
    def _take_y(y_enc, idx):
        return y_enc[..., idx]

    def _make_loss(self):
        n_classes = self.classes_.shape[0]
        if self._objective_is_custom:
            return CustomObjective(self.objective if callable(self.objective) else None,
                                   1 if n_classes == 2 else n_classes)
        return make_classification_loss(n_classes)

    def _extra_state(self):
        classes = self.classes_
        if classes.dtype.kind not in "biufU":
            raise TypeError("Only numeric, boolean or string class labels can be stored in "
                            f"the dartboost model format, got dtype {classes.dtype}.")
        state = {"classes": classes.tolist(), "classes_dtype": classes.dtype.str}
        if isinstance(self.class_weight, dict):
            # JSON keys are strings: pairs keep the labels' types
            state["class_weight"] = [[np.asarray(label).item(), float(w)]
                                     for label, w in self.class_weight.items()]
        return state

    def _load_extra_state(self, header):
        K = header["n_trees_per_iteration"]
        if K == 2:
            raise FormatError("n_trees_per_iteration: a classifier has 1 tree per iteration "
                              "(binary) or one per class (3 or more), never 2")
        self.classes_ = check_classes(header, 2 if K == 1 else K)
        pairs = header.get("class_weight")
        if pairs is not None:
            known = self.classes_.tolist()
            if not (isinstance(pairs, list) and len(pairs) <= len(known) and all(
                    isinstance(p, list) and len(p) == 2 and p[0] in known
                    and isinstance(p[1], numbers.Real) and not isinstance(p[1], bool)
                    and np.isfinite(p[1]) and p[1] >= 0 for p in pairs)):
                raise FormatError("class_weight: must be a list of [label, weight] pairs of "
                                  "the model's classes with finite weights >= 0")
            self.class_weight = {label: float(w) for label, w in pairs}

    # --- evaluation hooks (see BaseBoosting._metrics)
    _metric_names = tuple(CLASSIFICATION_METRICS)
    _BINARY_ONLY = ("binary_logloss", "binary_error", "auc", "average_precision")

    def _default_metric(self):
        return "binary_logloss" if self.classes_.shape[0] == 2 else "multi_logloss"

    #: metrics that read only the order of the scores, valid on raw scores
    _RAW_SCORE_METRICS = ("auc", "average_precision", "multi_error")

    def _builtin_metric(self, name):
        canon = _metrics.canonical_name(name, CLASSIFICATION_METRICS)
        if canon is None:
            return None
        if self._objective_is_custom and canon not in self._RAW_SCORE_METRICS:
            raise ValueError(f"eval_metric {name!r} needs probabilities, but a callable "
                             "objective gives raw scores with no known link; use one of "
                             f"{self._RAW_SCORE_METRICS} or a callable eval_metric.")
        if canon in self._BINARY_ONLY and self.classes_.shape[0] != 2:
            raise ValueError(f"eval_metric {name!r} is for binary classification; y has "
                             f"{self.classes_.shape[0]} classes (use multi_logloss or "
                             "multi_error, or a callable).")
        higher = canon in ("auc", "average_precision")
        return Metric(canon, getattr(_metrics, f"_{canon}"), higher)

    def _eval_data(self, name, y_enc, sample_weight):
        return EvalData(name, y_enc.ravel().astype(np.intp), sample_weight)

    def _eval_prediction(self, loss, raw):
        if self._objective_is_custom:
            return self._raw_output(raw)
        proba = loss.predict(raw)
        return proba[1] if proba.shape[0] == 2 else proba.T

    def _proba_or_raw(self, loss, raw):
        """``predict_proba``'s output for raw scores ``(K, n)``."""
        if self._objective_is_custom:
            warnings.warn("predict_proba of a model fitted with a callable objective "
                          "returns raw scores: the link of a custom objective is unknown.",
                          UserWarning, stacklevel=3)
            return self._raw_output(raw)
        return loss.predict_rows(raw, effective_n_threads(self.n_jobs))

    def _labels(self, raw):
        """Class labels of raw scores ``(K, n)``: the largest probability, or
        for a callable objective scikit-learn's rule on the margins."""
        if self._objective_is_custom:
            idx = (raw[0] > 0).astype(np.intp) if raw.shape[0] == 1 else np.argmax(raw, axis=0)
        else:
            idx = np.argmax(self._make_loss().predict(raw), axis=0)
        return self.classes_[idx]

    def decision_function(self, X, iteration_range=None):
        """Raw margins: ``(n,)`` for binary, ``(n, n_classes)`` for multiclass.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        iteration_range : (start, stop) or None, default=None
            Use only iterations ``[start, stop)`` with the weights they had
            right after iteration ``stop`` (the weight log is replayed, so
            DART's later rescalings are not applied).
        """
        raw = self._raw_predict(X, iteration_range)
        return raw[0] if raw.shape[0] == 1 else raw.T

    def staged_decision_function(self, X):
        for raw in self._staged_raw_predict(X):
            yield raw[0] if raw.shape[0] == 1 else raw.T

    def predict_proba(self, X, iteration_range=None, raw_score=False, pred_leaf=False,
                      pred_contrib=False):
        special = self._special_predict(X, iteration_range, raw_score, pred_leaf, pred_contrib)
        if special is not None:
            return special
        raw = self._raw_predict(X, iteration_range)
        return self._proba_or_raw(self._make_loss(), raw)

    predict_proba.__doc__ = """Class probabilities, shape ``(n, n_classes)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)""" + _PREDICT_OPTIONS_DOC

    def staged_predict_proba(self, X):
        loss = self._make_loss()
        for raw in self._staged_raw_predict(X):
            yield self._proba_or_raw(loss, raw)

    def predict(self, X, iteration_range=None, raw_score=False, pred_leaf=False,
                pred_contrib=False):
        """Predicted class labels; with ``raw_score``/``pred_leaf``/
        ``pred_contrib``, what :meth:`predict_proba` gives for them
        (LightGBM's convention)."""
        special = self._special_predict(X, iteration_range, raw_score, pred_leaf, pred_contrib)
        if special is not None:
            return special
        return self._labels(self._raw_predict(X, iteration_range))

    def staged_predict(self, X):
        for raw in self._staged_raw_predict(X):
            yield self._labels(raw)

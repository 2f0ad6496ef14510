"""The boosting loop shared by every dartboost estimator.

``BaseBoosting.fit`` orchestrates: validate, bin, then per iteration let the
boosting scheme (:class:`~dartboost._mart.MartScheme` or
:class:`~dartboost._dart.DartScheme`) take trees out of the scores, compute
gradients, grow one tree per output, and let the scheme put the trees back
with their new weights. The fitted model is a
:class:`~dartboost._booster.Booster` (``booster_``); the estimator adds the
scikit-learn conventions (validation, labels, output formatting).
"""
import numbers
from abc import ABC, abstractmethod

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import _categorical, _constraints, _frames
from ._binning import BinMapper
from ._feature_map import FeatureMap, split_features
from ._booster import Booster
from ._cext import _predictor
from ._common import MAX_BINS, X_DTYPE, effective_n_threads, threads_for
from ._compat import Interval, StrOptions, _check_sample_weight, _fit_context, validate_data
from ._dart import DartPolicy, DartScheme
from ._grower import GrowerBuffers, TreeGrower, histogram_offsets
from ._mart import MartScheme
from ._model_format import (FORMAT_NAME, FORMAT_VERSION, FormatError, check_params,
                            model_class, validate_state)
from ._scores import CacheBudget, ScoreKeeper
from . import _scores
from ._metrics import CallableMetric, as_metric_list
from .callbacks import CallbackEnv, EarlyStopException, ProgressBar, check_callbacks

# params that are not plain data (code, lists) and are not stored; a model
# fitted with a callable objective says so in the header ("custom_objective")
_UNSTORED_PARAMS = ("callbacks", "eval_metric", "objective")


_MAX_ABS_TARGET = 1e30


#: Dtypes ``fit`` keeps as given (others become float64). A float32 or
#: column-ordered array (a DataFrame's) is not copied whole into C-ordered
#: float64: ``BinMapper.transform`` bins it block by block.
FIT_DTYPES = (X_DTYPE, np.float32)


def eval_set_list(eval_set):
    """``eval_set`` (``None``, one ``(X_val, y_val[, w])`` tuple or a list of
    them) as a list of such tuples, its shape checked."""
    if eval_set is None:
        return []
    if isinstance(eval_set, tuple) and not (eval_set and isinstance(eval_set[0], tuple)):
        sets = [eval_set]  # one (X_val, y_val[, w]) tuple
    elif isinstance(eval_set, (list, tuple)):
        sets = list(eval_set)
    else:
        raise TypeError("eval_set must be a list of (X_val, y_val) or (X_val, y_val, "
                        f"sample_weight_val) tuples, or one such tuple; got a "
                        f"{type(eval_set).__name__}.")
    for i, item in enumerate(sets):
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            what = (f"a {type(item).__name__}" if not isinstance(item, (tuple, list))
                    else f"a {type(item).__name__} of length {len(item)}")
            raise TypeError(f"eval_set[{i}] must be a tuple (X_val, y_val) or (X_val, "
                            f"y_val, sample_weight_val); got {what}.")
    return sets


def eval_set_entries(sets, X, y, eval_names, eval_sample_weight):
    """``[(name, X_val, y_val, sample_weight_val), ...]`` of the eval sets
    ``sets`` (from :func:`eval_set_list`) with ``fit``'s ``eval_names`` and
    ``eval_sample_weight``: a set made of the training ``X``/``y`` objects is
    named ``"training"``, the others ``valid_<i>``; a set's weights come from
    its third item or ``eval_sample_weight``, never both."""
    names = check_eval_list(eval_names, len(sets), "eval_names")
    weights = check_eval_list(eval_sample_weight, len(sets), "eval_sample_weight")
    out = []
    for i, item in enumerate(sets):
        if names[i] is None:
            names[i] = "training" if item[0] is X and item[1] is y else f"valid_{i}"
        elif not isinstance(names[i], str):
            raise TypeError(f"eval_names[{i}] must be a str, got {names[i]!r}.")
        if len(item) == 3 and weights[i] is not None:
            raise ValueError(f"eval_set[{i}] has weights both as its third item and in "
                             "eval_sample_weight; give them once.")
        out.append((names[i], item[0], item[1], item[2] if len(item) == 3 else weights[i]))
    return out


def check_eval_list(values, n_sets, what):
    """``values`` (one entry per eval set, or None) as a list, its length checked."""
    if values is None:
        return [None] * n_sets
    if not isinstance(values, (list, tuple)) or len(values) != n_sets:
        raise ValueError(f"{what} must be a list with one entry per eval set "
                         f"({n_sets}), got {values!r:.80}.")
    return list(values)


class _EvaluatedSet:
    """An eval set during a fit: its score keeper, metric data and targets."""

    def __init__(self, keeper, data, y_enc, sample_weight):
        self.keeper = keeper
        self.data = data
        self.y_enc = y_enc
        self.sample_weight = sample_weight


class _StoppingRule:
    """What early stopping compares (higher is better): ``-loss`` by default,
    else the first result of the user's first metric, sign-flipped when lower
    is better; on the early-stopping set and on the training data."""

    def __init__(self, loss, metric, es_set, y_train, sw_train, train_data, patience, tol):
        self.loss = loss
        self.metric = metric
        self.es_set = es_set
        self.y_train = y_train
        self.sw_train = sw_train
        self.train_data = train_data
        self.patience = patience
        self.tol = tol

    def _signed(self, est, data, raw):
        _, value, higher_is_better = self.metric(data, est._eval_prediction(self.loss, raw))[0]
        return value if higher_is_better else -value

    def train_score(self, est, raw):
        if self.metric is None:
            return -self.loss.loss(self.y_train, raw, self.sw_train)
        return self._signed(est, self.train_data, raw)

    def validation_score(self, est, results=None):
        """The early-stopping set's score; read from this iteration's
        ``results`` when given (the metric is not evaluated twice)."""
        ev = self.es_set
        if self.metric is None:
            return -self.loss.loss(ev.y_enc, ev.keeper.raw, ev.sample_weight)
        if results is not None:
            for set_name, _, value, higher_is_better in results:
                if set_name == ev.data.name:
                    return value if higher_is_better else -value
        return self._signed(est, ev.data, ev.keeper.raw)


class BaseBoosting(BaseEstimator, ABC):
    """Histogram gradient boosting with DART or MART; see the estimators."""

    _parameter_constraints = {
        "boosting": [StrOptions({"dart", "mart"})],
        "n_estimators": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "max_leaf_nodes": [Interval(numbers.Integral, 2, None, closed="left"), None],
        "max_depth": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "min_samples_leaf": [Interval(numbers.Integral, 1, None, closed="left")],
        "min_child_weight": [Interval(numbers.Real, 0, None, closed="left")],
        "min_split_gain": [Interval(numbers.Real, 0, None, closed="left")],
        "l2_regularization": [Interval(numbers.Real, 0, None, closed="left")],
        "max_bins": [Interval(numbers.Integral, 2, MAX_BINS, closed="both")],
        "subsample": [Interval(numbers.Real, 0, 1, closed="right")],
        "colsample_bytree": [Interval(numbers.Real, 0, 1, closed="right")],
        "colsample_bynode": [Interval(numbers.Real, 0, 1, closed="right")],
        "drop_rate": [Interval(numbers.Real, 0, 1, closed="both")],
        "skip_drop": [Interval(numbers.Real, 0, 1, closed="both")],
        "max_drop": [numbers.Integral],
        "one_drop": ["boolean"],
        "sample_type": [StrOptions({"uniform", "weighted"})],
        "normalize_type": [StrOptions({"tree", "forest"})],
        "early_stopping": [StrOptions({"auto"}), "boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither"), None],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "early_stopping_rounds": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "eval_metric": [str, callable, list, None],
        "importance_type": [StrOptions({"gain", "split"})],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "warm_start": ["boolean"],
        "callbacks": [list, None],
        "random_state": ["random_state"],
        "n_jobs": [numbers.Integral, None],
        "verbose": ["verbose"],
        "categorical_features": [StrOptions({"from_dtype"}), "array-like", None],
        "max_cat_to_onehot": [Interval(numbers.Integral, 1, None, closed="left")],
        "cat_smooth": [Interval(numbers.Real, 0, None, closed="left")],
        "cat_l2": [Interval(numbers.Real, 0, None, closed="left")],
        "min_data_per_group": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_cat_threshold": [Interval(numbers.Integral, 1, None, closed="left")],
        "reg_alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "monotonic_cst": ["array-like", dict, None],
        "interaction_cst": [list, tuple, StrOptions({"pairwise", "no_interactions"}), None],
    }

    @abstractmethod
    def __init__(self, *, boosting, n_estimators, learning_rate, max_leaf_nodes, max_depth,
                 min_samples_leaf, min_child_weight, min_split_gain, l2_regularization,
                 max_bins, subsample, colsample_bytree, colsample_bynode, drop_rate,
                 skip_drop, max_drop, one_drop, sample_type, normalize_type, early_stopping,
                 validation_fraction, n_iter_no_change, early_stopping_rounds, tol,
                 eval_metric, importance_type, warm_start, callbacks, random_state, n_jobs,
                 verbose, categorical_features="from_dtype", max_cat_to_onehot=4,
                 cat_smooth=10.0, cat_l2=10.0, min_data_per_group=100, max_cat_threshold=32,
                 reg_alpha=0.0, monotonic_cst=None, interaction_cst=None):
        self.monotonic_cst = monotonic_cst
        self.interaction_cst = interaction_cst
        self.categorical_features = categorical_features
        self.max_cat_to_onehot = max_cat_to_onehot
        self.cat_smooth = cat_smooth
        self.cat_l2 = cat_l2
        self.min_data_per_group = min_data_per_group
        self.max_cat_threshold = max_cat_threshold
        self.reg_alpha = reg_alpha
        self.boosting = boosting
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.min_child_weight = min_child_weight
        self.min_split_gain = min_split_gain
        self.l2_regularization = l2_regularization
        self.max_bins = max_bins
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.colsample_bynode = colsample_bynode
        self.drop_rate = drop_rate
        self.skip_drop = skip_drop
        self.max_drop = max_drop
        self.one_drop = one_drop
        self.sample_type = sample_type
        self.normalize_type = normalize_type
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping_rounds = early_stopping_rounds
        self.tol = tol
        self.eval_metric = eval_metric
        self.importance_type = importance_type
        self.warm_start = warm_start
        self.callbacks = callbacks
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    # ----------------------------------------------------------------- hooks
    @abstractmethod
    def _encode_y(self, y, sample_weight):
        """Return targets in the loss's layout and set label attributes."""

    @abstractmethod
    def _make_loss(self):
        """The loss object; called after ``_encode_y``."""

    _is_classifier = False
    #: whether the model is (being) fitted with a callable ``objective``
    _objective_is_custom = False

    def _training_weights(self, y, sample_weight):
        """The weights of the training rows (hook: ``class_weight``)."""
        return sample_weight

    def _baseline(self, loss, y, sample_weight):
        """The raw score every output starts from: ``base_score`` when the
        estimator has it set, else the loss's best constant (0 for a
        callable objective)."""
        base_score = getattr(self, "base_score", None)
        if base_score is None:
            return loss.baseline(y, sample_weight)
        if not np.isfinite(base_score):
            raise ValueError(f"base_score must be finite, got {base_score!r}.")
        return np.full(loss.n_trees_per_iteration, float(base_score))

    def _check_objective(self, warm):
        """Record whether this fit uses a callable ``objective``; a warm start
        keeps the kind of objective its trees were grown with."""
        custom = callable(getattr(self, "objective", None))
        if warm and custom != self._objective_is_custom:
            raise ValueError("warm_start=True continues the fitted model, which was grown "
                             f"with {'a callable' if not custom else 'the built-in'} "
                             "objective; it cannot change.")
        self._objective_is_custom = custom

    # ------------------------------------------------------------------- fit
    def _is_fitted(self):
        return hasattr(self, "booster_")

    def _resolve_seed(self):
        """An integer seed for this fit: iteration ``t`` draws from the stream
        seeded by ``(seed, t)``, so interrupted and resumed fits agree."""
        if isinstance(self.random_state, numbers.Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _check_y(self, y):
        y_float = np.asarray(y, dtype=np.float64) if not self._is_classifier else None
        if y_float is not None and not np.all(np.isfinite(y_float)):
            raise ValueError("Input y contains NaN or infinity; targets must be finite.")
        if y_float is not None and y_float.size and np.max(np.abs(y_float)) > _MAX_ABS_TARGET:
            # gradients are float32: larger residuals would overflow to inf
            raise ValueError(f"Input y has values of magnitude above {_MAX_ABS_TARGET:g}, too "
                             "large for the float32 gradients; rescale the target.")

    def _categorical_split_options(self):
        return {"max_cat_to_onehot": self.max_cat_to_onehot, "cat_smooth": self.cat_smooth,
                "cat_l2": self.cat_l2, "min_data_per_group": self.min_data_per_group,
                "max_cat_threshold": self.max_cat_threshold}

    def _resolve_constraints(self, n_features, is_categorical):
        """``monotonic_cst`` as int8 per feature (or None) and
        ``interaction_cst`` as a list of feature-index groups (or None)."""
        names = getattr(self, "feature_names_in_", None)
        mono = _constraints.resolve_monotonic(self.monotonic_cst, n_features, names)
        if mono is not None:
            if is_categorical is not None and np.any(mono[is_categorical] != 0):
                raise ValueError("monotonic_cst: categorical features cannot be monotonic "
                                 "(their categories have no order).")
            if self.n_trees_per_iteration_ > 1 and self._is_classifier:
                raise ValueError("monotonic_cst is not supported for multiclass "
                                 "classification.")
        groups = _constraints.resolve_interactions(self.interaction_cst, n_features)
        return mono, groups

    def _fit_categorical(self, X):
        """Decide the categorical features of a new fit and encode ``X``."""
        X = _frames.as_frame(X)  # pyarrow / polars: a pandas frame, per column
        spec = self.categorical_features
        self.is_categorical_, self._categories = None, None
        is_frame = _categorical._is_frame(X)
        if not is_frame and (spec is None or isinstance(spec, str)):
            return X  # arrays: only explicit features are categorical
        if not is_frame:
            X = np.asarray(X, dtype=object) if not hasattr(X, "shape") else X
            if len(getattr(X, "shape", ())) != 2:
                return X  # validate_data names the problem
        names = np.asarray(X.columns, dtype=object) if is_frame else None
        mask = _categorical.resolve_categorical(spec, X, X.shape[1], names)
        if not mask.any():
            return X
        self.is_categorical_ = mask
        if hasattr(X, "tocsc"):  # scipy sparse: numbers only, used as labels
            return X
        cats = _categorical.fit_categories(X, mask)
        self._categories = cats if any(c is not None for c in cats) else None
        return self._encode_categorical(X)

    def _encode_categorical(self, X):
        """Label columns of ``X`` as the fitted category codes."""
        X = _frames.as_frame(X)
        cats = getattr(self, "_categories", None)
        if cats is None or len(getattr(X, "shape", ())) != 2:
            return X
        return _categorical.encode(X, None, cats)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, eval_set=None, eval_names=None,
            eval_sample_weight=None, eval_metric=None):
        """Fit the gradient-boosting model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            NaN marks a missing value.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights.
        eval_set : list of tuples, or one tuple, default=None
            Data sets ``(X_val, y_val)`` or ``(X_val, y_val, sample_weight_val)``
            whose metrics are recorded after every iteration in
            ``evals_result_``. Early stopping, when on, scores the *last* one
            (instead of a ``validation_fraction`` split of ``X``). Passing
            an ``eval_set`` never turns early stopping on.
        eval_names : list of str, default=None
            Names of the eval sets; default ``"training"`` for a set that is
            the training data itself (the same objects), else ``"valid_<i>"``.
        eval_sample_weight : list of array-like or None, default=None
            Weights of each eval set (or give them as the tuples' third item).
        eval_metric : str, callable or list, default=None
            Overrides the ``eval_metric`` parameter for this fit.

        Returns
        -------
        self
        """
        warm = self.warm_start and self._is_fitted()
        X_given, y_given = X, y
        X = self._encode_categorical(X) if warm else self._fit_categorical(X)
        X, y = validate_data(
            self, X, y, dtype=FIT_DTYPES, ensure_all_finite="allow-nan",
            accept_sparse=("csr", "csc"),
            multi_output=not self._is_classifier, y_numeric=not self._is_classifier,
            reset=not warm,
        )
        self._check_y(y)
        sample_weight = self._check_weights(sample_weight, X)
        if warm and self.n_estimators < self.n_iter_:
            raise ValueError(
                f"n_estimators={self.n_estimators} must be >= n_iter_={self.n_iter_} "
                "when warm_start=True (the fitted trees are kept)."
            )
        callbacks = check_callbacks(self.callbacks)
        patience = self._patience(X.shape[0])
        if not warm:
            self._seed = self._resolve_seed()
        sample_weight = self._training_weights(y, sample_weight)
        self._check_objective(warm)
        y_enc = self._encode_y(y, sample_weight)
        loss = self._make_loss()
        user_metric = eval_metric if eval_metric is not None else self.eval_metric
        if patience is not None and self._objective_is_custom and user_metric is None:
            raise ValueError("Early stopping with a callable objective needs an eval_metric "
                             "(a custom objective has no loss value to score).")
        metrics = self._metrics(user_metric)
        n_threads = effective_n_threads(self.n_jobs)
        eval_sets = self._eval_sets(X_given, y_given, eval_set, eval_names, eval_sample_weight)
        X_train, y_train, sw_train = X, y_enc, sample_weight
        es_index = None
        if patience is not None:
            if not eval_sets:
                if self.validation_fraction is None:
                    eval_sets.append(("training", X, y_enc, sample_weight))
                else:
                    X_train, y_train, sw_train, *val = self._validation_split(
                        X, y_enc, sample_weight)
                    eval_sets.append(("validation", *val))
            es_index = len(eval_sets) - 1
        if X_train.shape[0] < 2:
            raise ValueError(f"n_samples = {X_train.shape[0]} after the validation split; at "
                             "least 2 training samples are required.")

        if not warm:
            mapper = BinMapper(self.max_bins, random_state=self._seed, n_threads=n_threads)
            mapper.is_categorical = self.is_categorical_
            mapper.fit(X_train)
            self.booster_ = Booster(mapper, self._baseline(loss, y_train, sw_train))
            self.n_trees_per_iteration_ = loss.n_trees_per_iteration
            self.train_score_ = []
            self.validation_score_ = []
        booster = self.booster_
        booster.bin_mapper.n_threads = n_threads
        self._fit_constraints = self._resolve_constraints(X.shape[1], self.is_categorical_)
        scheme = self._scheme()

        # bin only the features that can split; the grower and the keepers
        # number them 0..n_used-1, the booster keeps the original indices.
        # Mostly-default features are kept as their entries (in the
        # histograms' layout), so a sparse X never becomes rows x features
        # bytes
        n_bins_all = booster.bin_mapper.n_bins_non_missing_

        def offsets_of(features):
            return histogram_offsets(n_bins_all[features])

        X_binned, used = booster.bin_mapper.transform_splittable(
            X_train, self.min_samples_leaf, keep=split_features(booster.nodes),
            offsets_of=offsets_of)
        fmap = FeatureMap(used, booster.n_features)
        self._fit_constraints = (fmap.take(self._fit_constraints[0]),
                                 fmap.local_groups(self._fit_constraints[1]))
        budget = CacheBudget(_scores.LEAF_CACHE_BYTES)
        missing_bin = booster.bin_mapper.missing_values_bin_idx_
        keepers = [ScoreKeeper(X_binned, np.tile(booster.baseline[:, None], X_binned.shape[0]),
                               missing_bin, budget, n_threads)]
        evaluated = []
        for name, X_val, y_val, sw_val in eval_sets:
            # (binned the same way, its own mostly-default features as entries:
            # a validation split of a sparse X is as large as its share)
            X_val_binned = booster.bin_mapper.transform_compact(
                X_val, fmap.features, offsets_of(fmap.features))
            keepers.append(ScoreKeeper(
                X_val_binned, np.tile(booster.baseline[:, None], X_val_binned.shape[0]),
                missing_bin, budget, n_threads))
            evaluated.append(_EvaluatedSet(keepers[-1], self._eval_data(name, y_val, sw_val),
                                           y_val, sw_val))
        # Warm start: re-register the existing trees (scores and leaf caches).
        K = self.n_trees_per_iteration_
        weights = booster.weights
        tables = fmap.local_tables(booster.binned_tables())
        for tree_idx in range(booster.n_trees):
            local_tree = fmap.to_local(booster.tree(tree_idx))
            for keeper in keepers:
                keeper.register_tree(local_tree, cache=scheme.keeps_leaf_ids, tables=tables)
                keeper.add_contribution(tree_idx, weights[tree_idx // K],
                                        keeper.raw[tree_idx % K])
        stopping = None
        if es_index is not None:
            # the scores early stopping compares: the loss itself unless the
            # user chose metrics, then their first one (higher is better)
            train_data = self._eval_data("training", y_train, sw_train)
            stopping = _StoppingRule(loss, None if user_metric is None else metrics[0],
                                     evaluated[es_index], y_train, sw_train, train_data,
                                     patience, self.tol)
        self.evals_result_ = {e.data.name: {} for e in evaluated}
        try:
            self._run_iterations(loss, scheme, X_binned, y_train, sw_train, keepers,
                                 evaluated, metrics, stopping, callbacks, n_threads, fmap)
        finally:
            self._fit_train_raw = None
        booster.compact()
        return self

    def _patience(self, n_samples):
        """Iterations without improvement before stopping, or ``None`` when
        early stopping is off. It is on only when asked: ``early_stopping=True``,
        or ``"auto"`` with ``n_iter_no_change``/``early_stopping_rounds`` set or
        more than 10,000 rows (scikit-learn's rule). An ``eval_set`` alone
        never turns it on."""
        rounds, no_change = self.early_stopping_rounds, self.n_iter_no_change
        if rounds is not None and no_change is not None and rounds != no_change:
            raise ValueError(f"early_stopping_rounds={rounds} and n_iter_no_change="
                             f"{no_change} are two names of one setting; give one of them.")
        asked = rounds if rounds is not None else no_change
        es = self.early_stopping
        if es == "auto":
            es = asked is not None or n_samples > 10_000
        if not es:
            return None
        return asked if asked is not None else 10

    def _check_weights(self, sample_weight, X):
        if sample_weight is None:
            return None
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if not np.all(np.isfinite(sample_weight)):
            raise ValueError("sample_weight contains NaN or infinity.")
        if np.any(sample_weight < 0):
            raise ValueError("sample_weight must be non-negative; negative weights found.")
        if sample_weight.sum() <= 0:
            raise ValueError("sample_weight sums to zero; at least one weight must be positive.")
        return sample_weight

    def _validation_split(self, X, y_enc, sample_weight):
        """``(X_tr, y_tr, sw_tr, X_va, y_va, sw_va)``: ``validation_fraction``
        of the rows held out for early stopping (stratified for classifiers)."""
        idx = np.arange(X.shape[0])
        y_for_strat = self._stratify_labels(y_enc)
        try:
            tr, va = train_test_split(idx, test_size=self.validation_fraction,
                                      random_state=self._seed, stratify=y_for_strat)
        except ValueError:
            tr, va = train_test_split(idx, test_size=self.validation_fraction,
                                      random_state=self._seed)
        tr, va = np.sort(tr), np.sort(va)
        sw_tr = None if sample_weight is None else sample_weight[tr]
        sw_va = None if sample_weight is None else sample_weight[va]
        return (X[tr], self._take_y(y_enc, tr), sw_tr, X[va], self._take_y(y_enc, va), sw_va)

    @staticmethod
    def _take_y(y_enc, idx):
        return y_enc[..., idx]

    def _stratify_labels(self, y_enc):
        return None

    def _eval_sets(self, X, y, eval_set, eval_names, eval_sample_weight):
        """``[(name, X_val, y_val_encoded, sw_val), ...]`` of ``fit``'s
        arguments; ``X``/``y`` are the training data as given (a set made of
        the same objects is named ``"training"``)."""
        entries = eval_set_entries(eval_set_list(eval_set), X, y, eval_names,
                                   eval_sample_weight)
        out = []
        for i, (name, X_raw, y_raw, sw) in enumerate(entries):
            X_val, y_val = validate_data(self, self._encode_categorical(X_raw), y_raw,
                                         dtype=FIT_DTYPES, accept_sparse=("csr", "csc"),
                                         ensure_all_finite="allow-nan",
                                         multi_output=not self._is_classifier,
                                         y_numeric=not self._is_classifier, reset=False)
            self._check_y(y_val)
            sw = self._check_weights(sw, X_val)
            out.append((name, X_val, self._encode_eval_y(i, y_val, sw), sw))
        if len({name for name, *_ in out}) != len(out):
            raise ValueError(f"eval set names must be unique, got "
                             f"{[name for name, *_ in out]}; pass eval_names.")
        return out

    def _encode_eval_y(self, index, y, sample_weight):
        """Targets of eval set ``index`` in the loss's layout (hook)."""
        return self._encode_y_transform(y)

    # ---------------------------------------------------------- evaluation
    @abstractmethod
    def _default_metric(self):
        """Name of the metric recorded when ``eval_metric`` is not given."""

    @abstractmethod
    def _builtin_metric(self, name):
        """The :class:`~dartboost._metrics.Metric` of a built-in name, or
        ``None`` for a name this estimator does not know."""

    @abstractmethod
    def _eval_data(self, name, y_enc, sample_weight):
        """An :class:`~dartboost._metrics.EvalData` of targets ``y_enc``."""

    @abstractmethod
    def _eval_prediction(self, loss, raw):
        """What metrics see as ``y_pred`` for raw scores ``(K, n)``."""

    _metric_names = ()

    def _metrics(self, eval_metric):
        """The metrics of ``eval_metric`` (the default one if ``None``)."""
        items = as_metric_list(eval_metric)
        if not items and not self._objective_is_custom:
            items = [self._default_metric()]  # a callable objective has none of its own
        metrics = []
        for item in items:
            if callable(item):
                metrics.append(CallableMetric(item))
                continue
            metric = self._builtin_metric(item)
            if metric is None:
                raise ValueError(f"Unknown eval_metric {item!r} for {type(self).__name__}; "
                                 f"expected a callable or one of {self._metric_names}.")
            if metric.name not in [m.name for m in metrics]:
                metrics.append(metric)
        return metrics

    # ------------------------------------------------------------- the loop
    def _dart_policy(self):
        return DartPolicy(self.learning_rate, self.drop_rate, self.skip_drop, self.max_drop,
                          self.one_drop, self.sample_type, self.normalize_type)

    def _scheme(self):
        """The boosting scheme of ``boosting``: the loop knows no other."""
        if self.boosting == "dart":
            return DartScheme(self._dart_policy(), self.n_trees_per_iteration_)
        return MartScheme(self.learning_rate)

    def _evaluate(self, loss, evaluated, metrics):
        """Record every metric of every eval set for this iteration; return
        LightGBM's ``evaluation_result_list``."""
        results = []
        for ev in evaluated:
            y_pred = self._eval_prediction(loss, ev.keeper.raw)
            record = self.evals_result_[ev.data.name]
            for metric in metrics:
                for name, value, higher_is_better in metric(ev.data, y_pred):
                    record.setdefault(name, []).append(value)
                    results.append((ev.data.name, name, value, higher_is_better))
        return results

    def _run_iterations(self, loss, scheme, X_binned, y, sw, keepers, evaluated, metrics,
                        stopping, callbacks, n_threads, fmap):
        booster = self.booster_
        K = self.n_trees_per_iteration_
        n_samples, n_features = X_binned.shape
        train = keepers[0]
        buffers = GrowerBuffers(n_samples)
        gradients = np.empty((K, n_samples), dtype=np.float32)
        hessians = np.empty((K, n_samples), dtype=np.float32)
        objects, before, after = callbacks
        objects = list(objects)
        if self.verbose:
            objects.append(ProgressBar(self.verbose))
        # training scores, visible to callbacks during the fit only (tests of
        # the incremental update read them); the fitted model never keeps them
        self._fit_train_raw = train.raw
        for cb in objects:
            if hasattr(cb, "on_fit_begin"):
                cb.on_fit_begin(self)
        if stopping is not None and not self.validation_score_:
            self.train_score_.append(stopping.train_score(self, train.raw))
            self.validation_score_.append(stopping.validation_score(self))
        self.n_iter_ = booster.num_iterations()
        best_iter, best_score = self._best_so_far() if stopping is not None else (None, None)
        begin = booster.num_iterations()
        params = self.get_params(deep=False)
        kept = None  # iterations to keep, as asked by an EarlyStopException
        mapper = booster.bin_mapper
        is_categorical = fmap.take(mapper.is_categorical_)
        n_bins, thresholds = fmap.take(mapper.n_bins_non_missing_), fmap.take(
            mapper.bin_thresholds_)
        for t in range(begin, self.n_estimators):
            try:
                for cb in before:
                    cb(CallbackEnv(self, params, t, begin, self.n_estimators, None))
            except EarlyStopException as exc:
                kept = self._iterations_to_keep(exc, t)
                break
            rng = np.random.default_rng([self._seed, t])
            dropped = scheme.begin_iteration(booster.weights, rng, keepers)
            loss.prepare(y, train.raw, sw)
            loss.gradients(y, train.raw, sw, n_threads, gradients, hessians)
            sample_indices = None
            if self.subsample < 1.0:
                n_sub = max(1, int(round(self.subsample * n_samples)))
                sample_indices = np.sort(rng.choice(n_samples, n_sub, replace=False)).astype(
                    np.uint32)
            feature_mask = None
            if self.colsample_bytree < 1.0:
                n_feat = max(1, int(round(self.colsample_bytree * n_features)))
                feature_mask = np.zeros(n_features, dtype=np.uint8)
                feature_mask[rng.choice(n_features, n_feat, replace=False)] = 1
            new_trees = []
            for k in range(K):
                grower = TreeGrower(
                    X_binned, gradients[k], hessians[k], n_bins,
                    mapper.missing_values_bin_idx_, sample_indices=sample_indices,
                    feature_mask=feature_mask, max_leaf_nodes=self.max_leaf_nodes,
                    max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
                    min_child_weight=self.min_child_weight, min_split_gain=self.min_split_gain,
                    l2_regularization=self.l2_regularization,
                    colsample_bynode=self.colsample_bynode, rng=rng, n_threads=n_threads,
                    buffers=buffers, bin_thresholds=thresholds,
                    hessians_are_constant=loss.unit_hessians and sw is None,
                    is_categorical=is_categorical, reg_alpha=self.reg_alpha,
                    **self._categorical_split_options(), monotonic_cst=self._fit_constraints[0],
                    interaction_cst=self._fit_constraints[1],
                )
                nodes, leaves = grower.grow()
                if loss.refits_leaves:
                    self._refit_leaves(loss, nodes, leaves, grower.partition, y, train.raw, sw)
                    if self._fit_constraints[0] is not None:
                        # refitted values stay inside the monotonic bounds
                        for idx, (low, high) in grower.leaf_bounds.items():
                            nodes["value"][idx] = min(max(nodes["value"][idx], low), high)
                # the training rows' leaves, from the grower's partition: the new
                # tree's training scores are then a gather, not a traversal (and
                # DART caches them)
                train_leaf_ids = None
                if sample_indices is None and len(leaves) <= 256:
                    train_leaf_ids = np.empty(n_samples, dtype=np.uint8)
                    starts = np.array([s for _, s, _ in leaves], dtype=np.int64)
                    stops = np.array([e for _, _, e in leaves], dtype=np.int64)
                    # leaves are sorted by node index, as leaf_layout numbers them
                    _predictor.set_leaf_ids(grower.partition, starts, stops, train_leaf_ids,
                                            threads_for(n_samples, n_threads))
                leaf_ids = train_leaf_ids if scheme.keeps_leaf_ids else None
                tables = {}
                if mapper.has_categorical:
                    tables = {"is_categorical": is_categorical,
                              "cat_bitsets": np.ascontiguousarray(grower.cat_bitsets.reshape(-1))}
                new_trees.append((nodes, leaf_ids, tables, grower.cat_bitsets, train_leaf_ids))
            new_weight, scale = scheme.end_iteration(keepers)
            booster.append_iteration([fmap.to_global(tree[0]) for tree in new_trees], dropped,
                                     scale, new_weight, [tree[3] for tree in new_trees])
            # F = F_minus + scale * sum_D w_i f_i (done by the scheme) + w_new f_new
            for keeper in keepers:
                for k, (nodes, leaf_ids, tables, _, train_leaf_ids) in enumerate(new_trees):
                    keeper.register_tree(nodes, leaf_ids if keeper is train else None,
                                         cache=scheme.keeps_leaf_ids, tables=tables)
                    keeper.add_contribution(t * K + k, new_weight, keeper.raw[k],
                                            train_leaf_ids if keeper is train else None)
            self.n_iter_ = t + 1
            results = self._evaluate(loss, evaluated, metrics)
            logs = {f"{set_name}_{name}": value for set_name, name, value, _ in results}
            if stopping is not None:
                self.train_score_.append(stopping.train_score(self, train.raw))
                self.validation_score_.append(stopping.validation_score(self, results))
                logs = {"train_score": self.train_score_[-1],
                        "validation_score": self.validation_score_[-1], **logs}
                if self.validation_score_[-1] > best_score + self.tol:
                    best_iter, best_score = t + 1, self.validation_score_[-1]
            stop = False
            try:
                for cb in objects:
                    if hasattr(cb, "on_iteration_end") and cb.on_iteration_end(self, t, logs):
                        stop = True
                env = CallbackEnv(self, params, t, begin, self.n_estimators, results)
                for cb in after:
                    cb(env)
            except EarlyStopException as exc:
                kept = self._iterations_to_keep(exc, t + 1)
                break
            if stopping is not None and t + 1 - best_iter >= stopping.patience:
                stop = True
            if stop:
                break
        if kept is None and stopping is not None:
            kept = best_iter
        if kept is not None and kept < self.n_iter_:
            booster.truncate(kept)
            self.n_iter_ = kept
            self._fit_train_raw = None  # the scores are of the longer model
        self.best_iteration_ = kept if kept is not None else self.n_iter_
        # LightGBM's best_score_: every recorded metric at the kept model
        at = self.best_iteration_ - 1 - begin
        self.best_score_ = {name: {m: curve[at] for m, curve in metrics_.items()
                                   if 0 <= at < len(curve)}
                            for name, metrics_ in self.evals_result_.items()}
        self.train_score_ = list(self.train_score_)
        for cb in objects:
            if hasattr(cb, "on_fit_end"):
                cb.on_fit_end(self)

    def _iterations_to_keep(self, exc, n_done):
        """Iterations kept after ``EarlyStopException`` ``exc`` with
        ``n_done`` iterations in the model."""
        best = exc.best_iteration
        if best is None:
            return n_done
        if not isinstance(best, numbers.Integral) or not 0 <= best < max(n_done, 1):
            raise ValueError(f"EarlyStopException(best_iteration={best!r}): expected None or "
                             f"a 0-based iteration index below {n_done}.")
        return min(int(best) + 1, n_done)

    def _best_so_far(self):
        """Replay the early-stopping bookkeeping over the recorded scores."""
        best_iter, best_score = 0, self.validation_score_[0]
        for it, score in enumerate(self.validation_score_[1:], start=1):
            if score > best_score + self.tol:
                best_iter, best_score = it, score
        return best_iter, best_score

    def _refit_leaves(self, loss, nodes, leaves, partition, y, raw, sw):
        """Leaf values of absolute-error/quantile trees: the loss's quantile of
        the residuals ``y - raw`` of the leaf's rows (as scikit-learn does)."""
        for node_idx, start, stop in leaves:
            rows = partition[start:stop]
            resid = y[0][rows] - raw[0][rows]
            nodes["value"][node_idx] = loss.leaf_value(resid, None if sw is None else sw[rows])

    # ------------------------------------------------------------- predict
    def _validate_X_predict(self, X, check_infinity=True):
        check_is_fitted(self, "booster_")
        # float32 and column-ordered arrays are kept as they are: the booster
        # converts them block by block instead of copying them whole
        return validate_data(self, self._encode_categorical(X), dtype=(X_DTYPE, np.float32),
                             ensure_all_finite="allow-nan" if check_infinity else False,
                             reset=False, accept_sparse=("csr", "csc"))

    def _raw_predict(self, X, iteration_range=None):
        """Raw scores of shape ``(K, n)`` (the losses' layout)."""
        # +-inf is refused by the prediction kernel in its own pass over the
        # rows, not by a separate single-threaded scan of X (on many cores
        # that scan costs a tenth of the prediction)
        # (a sparse X reaches the kernel as dense blocks, so it is checked there too)
        X = self._validate_X_predict(X, check_infinity=False)
        raw = self.booster_.predict_raw(X, iteration_range, effective_n_threads(self.n_jobs),
                                        reject_infinity=True)
        return np.ascontiguousarray(raw.T)

    def _staged_raw_predict(self, X):
        """Yield raw scores ``(K, n)`` of the model as it was after each
        iteration, replaying the weight log (so DART's later rescalings are
        not applied to earlier stages); O(n K) memory."""
        X = self._validate_X_predict(X)
        for raw in self.booster_.staged_predict_raw(X, effective_n_threads(self.n_jobs)):
            yield raw.T

    def _raw_output(self, raw):
        """Raw scores ``(K, n)`` in the layout of ``predict(raw_score=True)``:
        ``(n,)`` for one output, ``(n, K)`` otherwise (hook)."""
        return raw[0] if raw.shape[0] == 1 else raw.T

    def _special_predict(self, X, iteration_range, raw_score, pred_leaf, pred_contrib):
        """The output of ``predict``'s LightGBM options, or ``None`` when none
        is asked for."""
        asked = [name for name, flag in (("raw_score", raw_score), ("pred_leaf", pred_leaf),
                                         ("pred_contrib", pred_contrib)) if flag]
        if len(asked) > 1:
            raise ValueError(f"{' and '.join(asked)} exclude each other; ask for one.")
        if not asked:
            return None
        if pred_leaf:
            X = self._validate_X_predict(X)
            return self.booster_.predict_leaf(X, effective_n_threads(self.n_jobs),
                                              iteration_range, numbering="leaf")
        if pred_contrib:
            from .explain import shap_values
            X = self._validate_X_predict(X)
            self.booster_._iteration_range(iteration_range)  # one error for a bad range
            if iteration_range is not None and iteration_range[0] == iteration_range[1]:
                return self._contrib_of_baseline(X)
            return shap_values(self, X, iteration_range=iteration_range, n_jobs=self.n_jobs)
        return self._raw_output(self._raw_predict(X, iteration_range))

    def _contrib_of_baseline(self, X):
        """``pred_contrib`` of an empty iteration range: all in the expected value."""
        K, M = self.n_trees_per_iteration_, self.n_features_in_
        out = np.zeros((X.shape[0], K, M + 1))
        out[:, :, M] = self.booster_.baseline
        return out.reshape(X.shape[0], -1)

    _apply_is_3d = True

    def apply(self, X):
        """Leaf node reached in every tree (scikit-learn's ``apply``).

        Returns
        -------
        ndarray of uint32, shape (n_samples, n_iter_, K) or (n_samples, n_iter_)
            The leaf's node index within its tree (``node_index`` of
            :meth:`~dartboost._booster.Booster.trees_to_dataframe`); ``K`` is
            ``n_trees_per_iteration_``. As scikit-learn's gradient boosting:
            3-D for classifiers (``K == 1`` for binary) and multi-output
            regression, 2-D for single-output regression and ranking.
        """
        leaves = self.predict_leaf(X)
        shape = (leaves.shape[0], self.n_iter_, self.n_trees_per_iteration_)
        return leaves.reshape(shape) if self._apply_is_3d else leaves.reshape(shape[:2])

    def predict_leaf(self, X):
        """Leaf node index (within each tree) every row reaches.

        Returns
        -------
        ndarray of uint32, shape (n_samples, n_iter_ * n_trees_per_iteration_)
            Column ``j`` is tree ``j``: iteration ``j // K``, output ``j % K``.
            ``predict(X, pred_leaf=True)`` numbers leaves ``0 .. n_leaves-1``
            instead (LightGBM); :meth:`apply` has scikit-learn's shape.
        """
        X = self._validate_X_predict(X)
        return self.booster_.predict_leaf(X, effective_n_threads(self.n_jobs))

    # ------------------------------------------------------------ insights
    @property
    def feature_importances_(self):
        """Importances of ``importance_type``, normalised to sum to 1:
        ``"gain"``, each split's gain times its tree's current (DART) weight;
        ``"split"``, the number of splits on the feature."""
        check_is_fitted(self, "booster_")
        return self.booster_.feature_importances(self.importance_type)

    @property
    def tree_weights_(self):
        """Current weight of each iteration's trees (DART rescales them)."""
        check_is_fitted(self, "booster_")
        return self.booster_.weights

    # --------------------------------------------------------------- state
    def _extra_state(self):
        """Header fields this estimator adds to the booster's (hook)."""
        return {}

    def _load_extra_state(self, header):
        """Check and set the fields of :meth:`_extra_state` (hook); raise
        :class:`~dartboost.FormatError` naming a malformed one."""

    def _get_state(self):
        """``(header, arrays)``: the fitted model in the one model format
        (``docs/contracts.md``). Usable during fit (checkpoints)."""
        if not hasattr(self, "booster_"):
            from sklearn.exceptions import NotFittedError
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet.")
        params = {}
        for name, value in self.get_params(deep=False).items():
            if name in _UNSTORED_PARAMS:
                continue
            if name == "random_state" and not (value is None or isinstance(value, numbers.Integral)):
                value = None  # a RandomState object is not data; the resolved seed is kept
            if name == "class_weight" and isinstance(value, dict):
                value = None  # a dict (class_weight) is stored by _extra_state
            value = _constraints.plain(value)
            params[name] = value.item() if isinstance(value, np.generic) else value
        booster_header, arrays = self.booster_.to_state()
        header = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "class": type(self).__name__,
            "params": params,
            **booster_header,
            "feature_names_in": (list(map(str, self.feature_names_in_))
                                 if hasattr(self, "feature_names_in_") else None),
            "seed": int(self._seed),
            "train_score": [float(s) for s in self.train_score_],
            "validation_score": [float(s) for s in self.validation_score_],
            "best_iteration": int(getattr(self, "best_iteration_",
                                          booster_header["n_iter"])),
        }
        cats = getattr(self, "_categories", None)
        if cats is not None:
            header["categories"] = cats
        if self._objective_is_custom:
            header["custom_objective"] = True
        header.update(self._extra_state())
        return header, arrays

    def _set_state(self, header, arrays):
        """Load a state of :meth:`_get_state` into this estimator.

        Everything is checked on a fresh instance first: on a
        :class:`~dartboost.FormatError` this estimator is left unchanged.
        """
        validate_state(header, arrays)
        cls = type(self)
        if model_class(header.get("class")) is not cls:
            raise FormatError(f"class: state is of a {header['class']}, not a {cls.__name__}.")
        params = check_params(cls, header.get("params"))
        if "early_stopping_rounds" not in params and params.get("n_iter_no_change") == 10:
            # written before early_stopping_rounds existed, when 10 was the
            # default and did not ask for early stopping (None says so now)
            params = {**params, "n_iter_no_change": None}
        fresh = cls(**params)
        try:
            fresh._validate_params()
        except ValueError as exc:
            raise FormatError(f"params: {exc}") from None
        fresh.n_trees_per_iteration_ = header["n_trees_per_iteration"]
        custom = header.get("custom_objective", False)
        if not isinstance(custom, bool) or (custom and "objective" not in
                                            fresh.get_params(deep=False)):
            raise FormatError(f"custom_objective: must be true or false, and true only for "
                              f"estimators with an objective parameter, got {custom!r}")
        fresh._objective_is_custom = custom
        fresh._load_extra_state(header)
        try:
            loss = fresh._make_loss()
        except ValueError as exc:
            raise FormatError(f"params: {exc}") from None
        if loss.n_trees_per_iteration != fresh.n_trees_per_iteration_:
            raise FormatError(f"n_trees_per_iteration: {fresh.n_trees_per_iteration_} does "
                              f"not match the model's loss ({loss.n_trees_per_iteration})")
        fresh.booster_ = Booster.from_state(header, arrays, effective_n_threads(fresh.n_jobs))
        is_cat = fresh.booster_.bin_mapper.is_categorical_
        fresh._categories = (None if header.get("categories") is None else
                             _categorical.check_categories(
                                 header["categories"], header["n_features_in"], is_cat))
        fresh.is_categorical_ = is_cat.astype(bool) if is_cat.any() else None
        fresh.n_features_in_ = header["n_features_in"]
        if header.get("feature_names_in") is not None:
            fresh.feature_names_in_ = np.asarray(header["feature_names_in"], dtype=object)
        fresh.n_iter_ = header["n_iter"]
        fresh._seed = header["seed"]
        fresh.train_score_ = [float(v) for v in header.get("train_score", [])]
        fresh.validation_score_ = [float(v) for v in header.get("validation_score", [])]
        fresh.best_iteration_ = header["best_iteration"]
        fresh.evals_result_ = {}  # metrics of a fit are not part of the model
        fresh.best_score_ = {}
        # all checked: adopt the state, keep what is not stored (callbacks)
        if hasattr(self, "feature_names_in_") and not hasattr(fresh, "feature_names_in_"):
            del self.feature_names_in_
        for name, value in vars(fresh).items():
            if name not in _UNSTORED_PARAMS:
                setattr(self, name, value)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.sparse = True
        return tags

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

from ._binning import BinMapper
from ._booster import Booster
from ._cext import _predictor
from ._common import MAX_BINS, X_DTYPE, effective_n_threads
from ._compat import Interval, StrOptions, _check_sample_weight, _fit_context, validate_data
from ._dart import DartPolicy, DartScheme
from ._grower import GrowerBuffers, TreeGrower
from ._mart import MartScheme
from ._model_format import (FORMAT_NAME, FORMAT_VERSION, FormatError, check_params,
                            model_class, validate_state)
from ._scores import CacheBudget, ScoreKeeper
from . import _scores
from .callbacks import ProgressBar

# params that are not plain data and are not stored
_UNSTORED_PARAMS = ("callbacks",)


_MAX_ABS_TARGET = 1e30


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
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "warm_start": ["boolean"],
        "callbacks": [list, None],
        "random_state": ["random_state"],
        "n_jobs": [numbers.Integral, None],
        "verbose": ["verbose"],
    }

    @abstractmethod
    def __init__(self, *, boosting, n_estimators, learning_rate, max_leaf_nodes, max_depth,
                 min_samples_leaf, min_child_weight, min_split_gain, l2_regularization,
                 max_bins, subsample, colsample_bytree, colsample_bynode, drop_rate,
                 skip_drop, max_drop, one_drop, sample_type, normalize_type, early_stopping,
                 validation_fraction, n_iter_no_change, tol, warm_start, callbacks,
                 random_state, n_jobs, verbose):
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
        self.tol = tol
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

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, eval_set=None):
        """Fit the gradient-boosting model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            NaN marks a missing value.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights.
        eval_set : tuple (X_val, y_val) or (X_val, y_val, sample_weight_val)
            Validation data for early stopping, instead of a split of
            ``X`` (``validation_fraction``).

        Returns
        -------
        self
        """
        warm = self.warm_start and self._is_fitted()
        X, y = validate_data(
            self, X, y, dtype=X_DTYPE, ensure_all_finite="allow-nan", order="C",
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
        if not warm:
            self._seed = self._resolve_seed()
        y_enc = self._encode_y(y, sample_weight)
        loss = self._make_loss()
        n_threads = effective_n_threads(self.n_jobs)
        val = self._validation_data(X, y_enc, sample_weight, eval_set)
        X_train, y_train, sw_train, X_val, y_val, sw_val = val
        if X_train.shape[0] < 2:
            raise ValueError(f"n_samples = {X_train.shape[0]} after the validation split; at "
                             "least 2 training samples are required.")

        if not warm:
            mapper = BinMapper(self.max_bins, random_state=self._seed,
                               n_threads=n_threads).fit(X_train)
            self.booster_ = Booster(mapper, loss.baseline(y_train, sw_train))
            self.n_trees_per_iteration_ = loss.n_trees_per_iteration
            self.train_score_ = []
            self.validation_score_ = []
        booster = self.booster_
        booster.bin_mapper.n_threads = n_threads
        self._use_early_stopping = X_val is not None
        scheme = self._scheme()

        X_binned = booster.bin_mapper.transform(X_train)
        budget = CacheBudget(_scores.LEAF_CACHE_BYTES)
        missing_bin = booster.bin_mapper.missing_values_bin_idx_
        keepers = [ScoreKeeper(X_binned, np.tile(booster.baseline[:, None], X_binned.shape[0]),
                               missing_bin, budget, n_threads)]
        if X_val is not None:
            X_val_binned = booster.bin_mapper.transform(X_val)
            keepers.append(ScoreKeeper(
                X_val_binned, np.tile(booster.baseline[:, None], X_val_binned.shape[0]),
                missing_bin, budget, n_threads))
        # Warm start: re-register the existing trees (scores and leaf caches).
        K = self.n_trees_per_iteration_
        weights = booster.weights
        for tree_idx in range(booster.n_trees):
            for keeper in keepers:
                keeper.register_tree(booster.tree(tree_idx), cache=scheme.keeps_leaf_ids)
                keeper.add_contribution(tree_idx, weights[tree_idx // K],
                                        keeper.raw[tree_idx % K])
        try:
            self._run_iterations(loss, scheme, X_binned, y_train, sw_train, keepers, y_val,
                                 sw_val, n_threads)
        finally:
            self._fit_train_raw = None
        booster.compact()
        return self

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

    def _validation_data(self, X, y_enc, sample_weight, eval_set):
        """Split off validation data if early stopping is on."""
        n = X.shape[0]
        if eval_set is not None:
            X_val, y_val, sw_val = self._check_eval_set(eval_set)
            return X, y_enc, sample_weight, X_val, y_val, sw_val
        es = self.early_stopping
        if es == "auto":
            es = n > 10_000
        if not es:
            return X, y_enc, sample_weight, None, None, None
        if self.validation_fraction is None:
            return X, y_enc, sample_weight, X, y_enc, sample_weight
        idx = np.arange(n)
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

    def _check_eval_set(self, eval_set):
        if not isinstance(eval_set, (tuple, list)) or len(eval_set) not in (2, 3):
            raise TypeError("eval_set must be a tuple (X_val, y_val) or (X_val, y_val, "
                            "sample_weight_val).")
        X_val, y_val = eval_set[0], eval_set[1]
        X_val, y_val = validate_data(self, X_val, y_val, dtype=X_DTYPE,
                                     ensure_all_finite="allow-nan", order="C",
                                     multi_output=not self._is_classifier,
                                     y_numeric=not self._is_classifier, reset=False)
        self._check_y(y_val)
        sw_val = self._check_weights(eval_set[2] if len(eval_set) == 3 else None, X_val)
        return X_val, self._encode_y_val(y_val), sw_val

    def _encode_y_val(self, y):
        return self._encode_y_transform(y)

    # ------------------------------------------------------------- the loop
    def _dart_policy(self):
        return DartPolicy(self.learning_rate, self.drop_rate, self.skip_drop, self.max_drop,
                          self.one_drop, self.sample_type, self.normalize_type)

    def _scheme(self):
        """The boosting scheme of ``boosting``: the loop knows no other."""
        if self.boosting == "dart":
            return DartScheme(self._dart_policy(), self.n_trees_per_iteration_)
        return MartScheme(self.learning_rate)

    def _run_iterations(self, loss, scheme, X_binned, y, sw, keepers, y_val, sw_val,
                        n_threads):
        booster = self.booster_
        K = self.n_trees_per_iteration_
        n_samples, n_features = X_binned.shape
        train, valid = keepers[0], (keepers[1] if len(keepers) > 1 else None)
        buffers = GrowerBuffers(n_samples)
        gradients = np.empty((K, n_samples), dtype=np.float32)
        hessians = np.empty((K, n_samples), dtype=np.float32)
        callbacks = list(self.callbacks or [])
        if self.verbose:
            callbacks.append(ProgressBar(self.verbose))
        # training scores, visible to callbacks during the fit only (tests of
        # the incremental update read them); the fitted model never keeps them
        self._fit_train_raw = train.raw
        for cb in callbacks:
            if hasattr(cb, "on_fit_begin"):
                cb.on_fit_begin(self)
        es = self._use_early_stopping
        if es and not self.validation_score_:
            self.train_score_.append(-loss.loss(y, train.raw, sw))
            self.validation_score_.append(-loss.loss(y_val, valid.raw, sw_val))
        best_iter, best_score = self._best_so_far() if es else (None, None)
        mapper = booster.bin_mapper
        for t in range(booster.num_iterations(), self.n_estimators):
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
                    X_binned, gradients[k], hessians[k], mapper.n_bins_non_missing_,
                    mapper.missing_values_bin_idx_, sample_indices=sample_indices,
                    feature_mask=feature_mask, max_leaf_nodes=self.max_leaf_nodes,
                    max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
                    min_child_weight=self.min_child_weight, min_split_gain=self.min_split_gain,
                    l2_regularization=self.l2_regularization,
                    colsample_bynode=self.colsample_bynode, rng=rng, n_threads=n_threads,
                    buffers=buffers, bin_thresholds=mapper.bin_thresholds_,
                    hessians_are_constant=loss.unit_hessians and sw is None,
                )
                nodes, leaves = grower.grow()
                if loss.refits_leaves:
                    self._refit_leaves(loss, nodes, leaves, grower.partition, y, train.raw, sw)
                leaf_ids = None
                if scheme.keeps_leaf_ids and sample_indices is None and len(leaves) <= 256:
                    leaf_ids = np.empty(n_samples, dtype=np.uint8)
                    starts = np.array([s for _, s, _ in leaves], dtype=np.int64)
                    stops = np.array([e for _, _, e in leaves], dtype=np.int64)
                    # leaves are sorted by node index, as leaf_layout numbers them
                    _predictor.set_leaf_ids(grower.partition, starts, stops, leaf_ids)
                new_trees.append((nodes, leaf_ids))
            new_weight, scale = scheme.end_iteration(keepers)
            booster.append_iteration([nodes for nodes, _ in new_trees], dropped, scale,
                                     new_weight)
            # F = F_minus + scale * sum_D w_i f_i (done by the scheme) + w_new f_new
            for keeper in keepers:
                for k, (nodes, leaf_ids) in enumerate(new_trees):
                    keeper.register_tree(nodes, leaf_ids if keeper is train else None,
                                         cache=scheme.keeps_leaf_ids)
                    keeper.add_contribution(t * K + k, new_weight, keeper.raw[k])
            self.n_iter_ = t + 1
            logs = {}
            if es:
                self.train_score_.append(-loss.loss(y, train.raw, sw))
                self.validation_score_.append(-loss.loss(y_val, valid.raw, sw_val))
                logs = {"train_score": self.train_score_[-1],
                        "validation_score": self.validation_score_[-1]}
                if self.validation_score_[-1] > best_score + self.tol:
                    best_iter, best_score = t + 1, self.validation_score_[-1]
            stop = False
            for cb in callbacks:
                if hasattr(cb, "on_iteration_end") and cb.on_iteration_end(self, t, logs):
                    stop = True
            if es and t + 1 - best_iter >= self.n_iter_no_change:
                stop = True
            if stop:
                break
        if es and best_iter < self.n_iter_:
            booster.truncate(best_iter)
            self.n_iter_ = best_iter
            self._fit_train_raw = None  # the scores are of the longer model
        self.best_iteration_ = best_iter if es else self.n_iter_
        self.train_score_ = list(self.train_score_)
        for cb in callbacks:
            if hasattr(cb, "on_fit_end"):
                cb.on_fit_end(self)

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
    def _validate_X_predict(self, X):
        check_is_fitted(self, "booster_")
        return validate_data(self, X, dtype=X_DTYPE, ensure_all_finite="allow-nan", order="C",
                             reset=False)

    def _raw_predict(self, X, iteration_range=None):
        """Raw scores of shape ``(K, n)`` (the losses' layout)."""
        X = self._validate_X_predict(X)
        raw = self.booster_.predict_raw(X, iteration_range, effective_n_threads(self.n_jobs))
        return np.ascontiguousarray(raw.T)

    def _staged_raw_predict(self, X):
        """Yield raw scores ``(K, n)`` of the model as it was after each
        iteration, replaying the weight log (so DART's later rescalings are
        not applied to earlier stages); O(n K) memory."""
        X = self._validate_X_predict(X)
        for raw in self.booster_.staged_predict_raw(X, effective_n_threads(self.n_jobs)):
            yield raw.T

    def predict_leaf(self, X):
        """Index (within each tree) of the leaf every row reaches.

        Returns
        -------
        ndarray of uint32, shape (n_samples, n_iter_ * n_trees_per_iteration_)
            Column ``j`` is tree ``j``: iteration ``j // K``, output ``j % K``.
        """
        X = self._validate_X_predict(X)
        return self.booster_.predict_leaf(X, effective_n_threads(self.n_jobs))

    # ------------------------------------------------------------ insights
    @property
    def feature_importances_(self):
        """Split-gain importances, each tree's gains multiplied by its current
        (DART) weight, normalised to sum to 1."""
        check_is_fitted(self, "booster_")
        return self.booster_.feature_importances()

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
        fresh = cls(**params)
        try:
            fresh._validate_params()
        except ValueError as exc:
            raise FormatError(f"params: {exc}") from None
        fresh.n_trees_per_iteration_ = header["n_trees_per_iteration"]
        fresh._load_extra_state(header)
        try:
            loss = fresh._make_loss()
        except ValueError as exc:
            raise FormatError(f"params: {exc}") from None
        if loss.n_trees_per_iteration != fresh.n_trees_per_iteration_:
            raise FormatError(f"n_trees_per_iteration: {fresh.n_trees_per_iteration_} does "
                              f"not match the model's loss ({loss.n_trees_per_iteration})")
        fresh.booster_ = Booster.from_state(header, arrays, effective_n_threads(fresh.n_jobs))
        fresh.n_features_in_ = header["n_features_in"]
        if header.get("feature_names_in") is not None:
            fresh.feature_names_in_ = np.asarray(header["feature_names_in"], dtype=object)
        fresh.n_iter_ = header["n_iter"]
        fresh._seed = header["seed"]
        fresh.train_score_ = [float(v) for v in header.get("train_score", [])]
        fresh.validation_score_ = [float(v) for v in header.get("validation_score", [])]
        fresh.best_iteration_ = header["best_iteration"]
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
        return tags

"""The boosting loop shared by every dartboost estimator.

``BaseBoosting.fit`` orchestrates: validate, bin, then per iteration ask the
DART policy what to drop, compute gradients at the scores without the dropped
trees, grow one tree per output, renormalise and update the cached scores.
Trees and weights are kept apart (weights per iteration, with a log of every
rescaling) so the model at any past iteration can be rebuilt exactly.
"""
import numbers
from abc import ABC, abstractmethod

import numpy as np
from sklearn.base import BaseEstimator, _fit_context
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import (_check_sample_weight, check_is_fitted, validate_data)

from ._binning import BinMapper
from ._cext import _predictor
from ._common import MAX_BINS, NODE_DTYPE, X_DTYPE, effective_n_threads, threads_for
from ._dart import DartPolicy, WeightLog
from ._grower import GrowerBuffers, TreeGrower
from ._scores import CacheBudget, ScoreKeeper
from . import _scores
from .callbacks import ProgressBar


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
        return hasattr(self, "_trees")

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
            self._bin_mapper = BinMapper(self.max_bins, random_state=self._seed,
                                         n_threads=n_threads).fit(X_train)
            self._baseline = loss.baseline(y_train, sw_train)
            self._trees = []
            self._weight_log = WeightLog()
            self._weights = []
            self.n_trees_per_iteration_ = loss.n_trees_per_iteration
            self.train_score_ = []
            self.validation_score_ = []
        self._bin_mapper.n_threads = n_threads
        self._predictor_cache = None
        self._use_early_stopping = X_val is not None

        X_binned = self._bin_mapper.transform(X_train)
        budget = CacheBudget(_scores.LEAF_CACHE_BYTES)
        K = self.n_trees_per_iteration_
        missing_bin = self._bin_mapper.missing_values_bin_idx_
        train = ScoreKeeper(X_binned, np.tile(self._baseline[:, None], X_binned.shape[0]),
                            missing_bin, budget, n_threads)
        valid = None
        if X_val is not None:
            X_val_binned = self._bin_mapper.transform(X_val)
            valid = ScoreKeeper(X_val_binned,
                                np.tile(self._baseline[:, None], X_val_binned.shape[0]),
                                missing_bin, budget, n_threads)
        # Warm start: re-register the existing trees (scores and leaf caches).
        for tree_idx, nodes in enumerate(self._trees):
            w = self._weights[tree_idx // K]
            for keeper in (train, valid):
                if keeper is not None:
                    keeper.register_tree(nodes)
                    keeper.add_contribution(tree_idx, w, keeper.raw[tree_idx % K])
                    if self.boosting != "dart":
                        keeper.forget_leaf_ids(tree_idx)

        self._run_iterations(loss, X_binned, y_train, sw_train, train, valid, y_val, sw_val,
                             n_threads)
        self._predictor_cache = self._build_predictor_arrays()
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
        if self.boosting != "dart":
            return None
        return DartPolicy(self.learning_rate, self.drop_rate, self.skip_drop, self.max_drop,
                          self.one_drop, self.sample_type, self.normalize_type)

    def _run_iterations(self, loss, X_binned, y, sw, train, valid, y_val, sw_val, n_threads):
        K = self.n_trees_per_iteration_
        n_samples, n_features = X_binned.shape
        policy = self._dart_policy()
        buffers = GrowerBuffers(n_samples)
        gradients = np.empty((K, n_samples), dtype=np.float32)
        hessians = np.empty((K, n_samples), dtype=np.float32)
        drop_train = np.zeros((K, n_samples)) if policy is not None else None
        drop_valid = np.zeros((K, valid.n_samples)) if policy is not None and valid else None
        callbacks = list(self.callbacks or [])
        if self.verbose:
            callbacks.append(ProgressBar(self.verbose))
        for cb in callbacks:
            if hasattr(cb, "on_fit_begin"):
                cb.on_fit_begin(self)
        es = self._use_early_stopping
        if es and not self.validation_score_:
            self.train_score_.append(-loss.loss(y, train.raw, sw))
            self.validation_score_.append(-loss.loss(y_val, valid.raw, sw_val))
        best_iter, best_score = self._best_so_far() if es else (None, None)
        bin_thresholds = self._bin_mapper.bin_thresholds_
        start = len(self._weights)
        for t in range(start, self.n_estimators):
            rng = np.random.default_rng([self._seed, t])
            weights_arr = np.asarray(self._weights, dtype=np.float64)
            dropped = (policy.select_dropped(weights_arr, rng) if policy is not None
                       else np.empty(0, dtype=np.int64))
            # scores without the dropped trees: F_minus = F - sum_D w_i f_i
            if dropped.size:
                for keeper, buf in ((train, drop_train), (valid, drop_valid)):
                    if keeper is None:
                        continue
                    buf.fill(0.0)
                    for i in dropped:
                        for k in range(K):
                            keeper.add_contribution(i * K + k, self._weights[i], buf[k])
                    keeper.raw -= buf
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
                    X_binned, gradients[k], hessians[k], self._bin_mapper.n_bins_non_missing_,
                    self._bin_mapper.missing_values_bin_idx_, sample_indices=sample_indices,
                    feature_mask=feature_mask, max_leaf_nodes=self.max_leaf_nodes,
                    max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
                    min_child_weight=self.min_child_weight, min_split_gain=self.min_split_gain,
                    l2_regularization=self.l2_regularization,
                    colsample_bynode=self.colsample_bynode, rng=rng, n_threads=n_threads,
                    buffers=buffers, bin_thresholds=bin_thresholds,
                    hessians_are_constant=loss.unit_hessians and sw is None,
                )
                nodes, leaves = grower.grow()
                if loss.refits_leaves:
                    self._refit_leaves(loss, nodes, leaves, grower.partition, y, train.raw, sw)
                leaf_ids = None
                if sample_indices is None and len(leaves) <= 256:
                    leaf_ids = np.empty(n_samples, dtype=np.uint8)
                    starts = np.array([s for _, s, _ in leaves], dtype=np.int64)
                    stops = np.array([e for _, _, e in leaves], dtype=np.int64)
                    # leaves are sorted by node index, as leaf_layout numbers them
                    _predictor.set_leaf_ids(grower.partition, starts, stops, leaf_ids)
                new_trees.append((nodes, leaf_ids))
            new_weight, scale = (policy.normalize(dropped.size) if policy is not None
                                 else (self.learning_rate, 1.0))
            WeightLog.apply(self._weights, dropped, scale, new_weight)
            self._weight_log.append(dropped, scale, new_weight)
            for k, (nodes, leaf_ids) in enumerate(new_trees):
                self._trees.append(nodes)
            # F = F_minus + scale * sum_D w_i f_i + w_new f_new
            for keeper, buf in ((train, drop_train), (valid, drop_valid)):
                if keeper is None:
                    continue
                if dropped.size:
                    keeper.raw += scale * buf
                for k, (nodes, leaf_ids) in enumerate(new_trees):
                    keeper.register_tree(nodes, leaf_ids if keeper is train else None)
                    keeper.add_contribution(t * K + k, new_weight, keeper.raw[k])
                    if policy is None:  # MART never drops: no need to keep leaf ids
                        keeper.forget_leaf_ids(t * K + k)
            self.n_iter_ = t + 1
            self._predictor_cache = None
            logs = {}
            if es:
                self.train_score_.append(-loss.loss(y, train.raw, sw))
                self.validation_score_.append(-loss.loss(y_val, valid.raw, sw_val))
                logs = {"train_score": self.train_score_[-1],
                        "validation_score": self.validation_score_[-1]}
                if self.validation_score_[-1] > best_score + self.tol:
                    best_iter, best_score = t + 1, self.validation_score_[-1]
            self._train_raw = train.raw  # exposed for tests of the incremental update
            stop = False
            for cb in callbacks:
                if hasattr(cb, "on_iteration_end") and cb.on_iteration_end(self, t, logs):
                    stop = True
            if es and t + 1 - best_iter >= self.n_iter_no_change:
                stop = True
            if stop:
                break
        if es and best_iter < self.n_iter_:
            self._truncate(best_iter)
            self._train_raw = None
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

    def _truncate(self, n_iterations):
        """Keep the first ``n_iterations`` with the exact weights they had then."""
        K = self.n_trees_per_iteration_
        del self._trees[n_iterations * K:]
        self._weight_log.truncate(n_iterations)
        self._weights = list(self._weight_log.replay())
        self.n_iter_ = n_iterations

    # ------------------------------------------------------------- predict
    def _build_predictor_arrays(self):
        """Trees flattened for the compiled predictor: ``(nodes, offsets,
        per-tree weights)``. Built once at the end of ``fit`` (predict must not
        change the estimator's state)."""
        K = self.n_trees_per_iteration_
        trees = self._trees
        offsets = np.zeros(len(trees) + 1, dtype=np.int64)
        np.cumsum([t.shape[0] for t in trees], out=offsets[1:])
        nodes = np.concatenate(trees) if trees else np.zeros(0, dtype=NODE_DTYPE)
        weights = np.repeat(np.asarray(self._weights, dtype=np.float64), K)
        return nodes, offsets, weights

    def _predictor_arrays(self):
        if self._predictor_cache is None:  # mid-fit (e.g. from a callback)
            return self._build_predictor_arrays()
        return self._predictor_cache

    def _validate_X_predict(self, X):
        check_is_fitted(self, "_trees")
        return validate_data(self, X, dtype=X_DTYPE, ensure_all_finite="allow-nan", order="C",
                             reset=False)

    def _raw_predict(self, X):
        """Raw scores of shape ``(K, n)``."""
        X = self._validate_X_predict(X)
        nodes, offsets, weights = self._predictor_arrays()
        out = np.tile(self._baseline, (X.shape[0], 1))
        n_threads = threads_for(X.shape[0] * len(self._trees) * 8,
                                effective_n_threads(self.n_jobs))
        _predictor.predict_raw(nodes, offsets, weights, self.n_trees_per_iteration_, X,
                               n_threads, out)
        return np.ascontiguousarray(out.T)

    def _staged_raw_predict(self, X):
        """Yield raw scores ``(K, n)`` of the model as it was after each iteration,
        replaying the weight log (so DART's later rescalings are not applied
        to earlier stages)."""
        X = self._validate_X_predict(X)
        nodes, offsets, _ = self._predictor_arrays()
        K = self.n_trees_per_iteration_
        n = X.shape[0]
        leaves = np.empty((n, len(self._trees)), dtype=np.uint32)
        _predictor.predict_leaves_raw(
            nodes, offsets, X,
            threads_for(n * len(self._trees) * 8, effective_n_threads(self.n_jobs)), leaves)
        contrib = [self._trees[j]["value"][leaves[:, j]] for j in range(len(self._trees))]
        raw = np.tile(self._baseline[:, None], n)
        weights = []
        for t, dropped, scale, new_weight in self._weight_log.iter_steps():
            for i in dropped:
                for k in range(K):
                    raw[k] += (weights[i] * scale - weights[i]) * contrib[i * K + k]
            WeightLog.apply(weights, dropped, scale, new_weight)
            for k in range(K):
                raw[k] += new_weight * contrib[t * K + k]
            yield raw.copy()

    # ------------------------------------------------------------ insights
    @property
    def feature_importances_(self):
        """Split-gain importances, each tree's gains multiplied by its current
        (DART) weight, normalised to sum to 1."""
        check_is_fitted(self, "_trees")
        K = self.n_trees_per_iteration_
        imp = np.zeros(self.n_features_in_)
        for j, nodes in enumerate(self._trees):
            split = nodes["is_leaf"] == 0
            np.add.at(imp, nodes["feature_idx"][split], self._weights[j // K] * nodes["gain"][split])
        total = imp.sum()
        return imp / total if total > 0 else imp

    @property
    def tree_weights_(self):
        """Current weight of each iteration's trees (DART rescales them)."""
        check_is_fitted(self, "_trees")
        return np.asarray(self._weights, dtype=np.float64)

    # --------------------------------------------------------------- state
    def _get_state(self):
        """``(header, arrays)``: the fitted model as JSON-able metadata and plain
        arrays (see docs/contracts.md). Usable during fit (checkpoints)."""
        from .model_io import get_state
        return get_state(self)

    def _set_state(self, header, arrays):
        """Load a state produced by :meth:`_get_state` into this estimator."""
        from .model_io import set_state
        set_state(self, header, arrays)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

"""Parity ensembles: parity members for a group of *different* deployed models.

ParM codes k queries to one model. Here the k slots are k different models
(members) answering the same query: the members of a voting/bagging
ensemble, or the shards of a large boosted model split into tree ranges.
Parity member ``j`` is trained on the plain query to output
``sum_i A[j, i] F_i(x)``, so a missing member's output is rebuilt by the same
linear decoder as :class:`CodedPredictor` uses.

Whether this pays depends on how much one member matters: a bagging
ensemble barely notices a lost member (average the others), while a shard
of a boosted model carries a distinct part of the sum. The benchmark reports
both against a distilled backup of the whole model.
"""

import numpy as np
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.multioutput import MultiOutputRegressor
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted

from dartboost._common import effective_n_threads

from ._base import DECODED, DEFAULT, EXACT, UnrecoverableGroupError, _raw_to_index
from ._codes import check_k_r, code_matrix, linear_decode, raw_output
from ._parity import _supports_multioutput, default_parity_estimator

__all__ = ["ParityEnsemble", "TreeRangeShard"]


class TreeRangeShard(BaseEstimator):
    """The raw contribution of trees ``[start, stop)`` of a fitted boosted model.

    Splitting a large boosted model into tree ranges served by different
    workers makes each shard one member of a :class:`ParityEnsemble` with
    ``combine="sum"``: the shards' outputs add up to the model's raw output.

    Parameters
    ----------
    estimator : fitted boosted model
        scikit-learn ``GradientBoostingRegressor``/``GradientBoostingClassifier``
        or a dartboost estimator (its ``booster_``; the shard holds only the
        range's trees, with the DART weights they have in the full model).
    start, stop : int
        Iteration range (0-based, ``stop`` exclusive; ``None`` means the end).
        An iteration holds one tree per output (per class).
    include_baseline : bool, default=False
        Add the model's baseline (intercept / initial prediction); give it to
        exactly one shard so the shards sum to the full raw output.

    Notes
    -----
    ``predict`` returns the raw contribution (n,) or (n, d): shards are
    regressors in raw-output space whatever the task of the full model.

    A fitted shard of a dartboost model pickles with its own trees only (what
    a worker needs): the ``estimator`` parameter, the whole model, is left out
    and reads ``None`` after unpickling, so k shipped shards cost one model,
    not k. Such a shard predicts as before; to re-shard, build new shards from
    the full model.
    """

    _estimator_type = "regressor"

    def __init__(self, estimator, start=0, stop=None, include_baseline=False):
        self.estimator = estimator
        self.start = start
        self.stop = stop
        self.include_baseline = include_baseline

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "regressor"
        return tags

    def __sklearn_clone__(self):
        # The model being sharded is deployed and fitted; share it.
        return type(self)(**self.get_params(deep=False))

    def fit(self, X=None, y=None):
        """Check the wrapped model and the range; no training happens."""
        est = self.estimator
        check_is_fitted(est)
        if hasattr(est, "estimators_") and hasattr(est, "learning_rate") \
                and np.asarray(est.estimators_).ndim == 2:
            self._kind = "sklearn_gb"
            n_iter = est.estimators_.shape[0]
        elif hasattr(est, "booster_"):
            self._kind = "dartboost"
            n_iter = est.booster_.num_iterations()
        else:
            raise TypeError(
                f"TreeRangeShard supports scikit-learn GradientBoosting* and dartboost "
                f"estimators, got {type(est).__name__}."
            )
        stop = n_iter if self.stop is None else self.stop
        if not (0 <= self.start < stop <= n_iter):
            raise ValueError(
                f"tree range [{self.start}, {stop}) is not inside the model's {n_iter} iterations."
            )
        self.stop_ = stop
        per_iter = (est.estimators_.shape[1] if self._kind == "sklearn_gb"
                    else est.booster_.n_trees_per_iteration)
        self.n_trees_ = (stop - self.start) * per_iter
        if hasattr(est, "n_features_in_"):
            self.n_features_in_ = est.n_features_in_
        if self._kind == "dartboost":
            # only the range's trees (k shards cost one model, not k)
            self._part = est.booster_.slice(self.start, stop, self.include_baseline)
            self._n_threads = effective_n_threads(est.n_jobs)
        return self

    def __getstate__(self):
        state = super().__getstate__()
        if state.get("_kind") == "dartboost":
            state["estimator"] = None  # the shard's trees are in _part
        return state

    def _contribution(self, X):
        est = self.estimator
        if self._kind == "sklearn_gb":
            trees = est.estimators_[self.start:self.stop_]
            out = np.zeros((X.shape[0], trees.shape[1]))
            for row in trees:
                for c, tree in enumerate(row):
                    out[:, c] += tree.predict(X)
            out *= est.learning_rate
            if self.include_baseline:
                all_trees = np.zeros_like(out)
                for row in est.estimators_:
                    for c, tree in enumerate(row):
                        all_trees[:, c] += tree.predict(X)
                out += raw_output(est, X) - est.learning_rate * all_trees
            return out
        return self._part.predict_raw(X, n_threads=self._n_threads)

    def predict(self, X):
        """Raw contribution of the shard, shape (n,) for one output else (n, d)."""
        check_is_fitted(self, "n_trees_")
        X = check_array(X, dtype=np.float64)
        out = self._contribution(X)
        return out[:, 0] if out.shape[1] == 1 else out


class ParityEnsemble(BaseEstimator):
    """Parity members for k different models that answer the same queries.

    Parameters
    ----------
    members : list of k fitted estimators
        The deployed members (shared, never refitted; ``clone`` keeps them).
        All must give raw outputs of the same width.
    combine : {"mean", "sum"}, default="mean"
        How member raw outputs form the ensemble output: ``"mean"`` for
        voting/bagging ensembles (averaging margins), ``"sum"`` for shards of
        an additive model (:class:`TreeRangeShard`).
    r : int, default=1
        Parity members; any r missing members are recoverable.
    parity_estimator : regressor, default=None
        Unfitted regressor cloned for each parity member. ``None`` uses the
        family of the first member (:func:`default_parity_estimator`; for a
        shard, the sharded model's family).
    on_unrecoverable : {"default", "raise"}, default="default"
        More than r members missing: use the lost members' mean training
        outputs (flagged), or raise :class:`UnrecoverableGroupError`.
    random_state : int, RandomState or None, default=None

    Attributes
    ----------
    code_matrix_ : ndarray of shape (r, k)
    parity_estimators_ : list of r fitted regressors
    default_outputs_ : ndarray of shape (k, d)
        Mean raw output of each member on the training queries.
    n_outputs_, n_features_in_ : int
    """

    def __init__(self, members, combine="mean", r=1, parity_estimator=None,
                 on_unrecoverable="default", random_state=None):
        self.members = members
        self.combine = combine
        self.r = r
        self.parity_estimator = parity_estimator
        self.on_unrecoverable = on_unrecoverable
        self.random_state = random_state

    def __sklearn_clone__(self):
        params = self.get_params(deep=False)
        members = params.pop("members")
        return type(self)(members=list(members),
                          **{n: clone(v, safe=False) for n, v in params.items()})

    @property
    def k(self):
        """Number of members."""
        return len(self.members)

    def _template(self):
        m = self.members[0]
        return m.estimator if isinstance(m, TreeRangeShard) else m

    def _is_classifier(self):
        return is_classifier(self._template())

    def fit(self, X, y=None):
        """Train the parity members on ``X`` (no labels needed).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        if not isinstance(self.members, (list, tuple)) or len(self.members) < 2:
            raise ValueError("members must be a list of at least 2 fitted estimators.")
        check_k_r(self.k, self.r)
        if self.combine not in ("mean", "sum"):
            raise ValueError(f"combine must be 'mean' or 'sum', got {self.combine!r}.")
        if self.on_unrecoverable not in ("default", "raise"):
            raise ValueError(
                f"on_unrecoverable must be 'default' or 'raise', got {self.on_unrecoverable!r}."
            )
        for m in self.members:
            if isinstance(m, TreeRangeShard) and not hasattr(m, "n_trees_"):
                m.fit()
        X = check_array(X, dtype=np.float64)
        self.n_features_in_ = X.shape[1]
        outs = self.member_outputs(X, _checked=True)
        self.n_outputs_ = outs.shape[2]
        A = code_matrix(self.k, self.r)
        self.code_matrix_ = A
        self.default_outputs_ = outs.mean(axis=1)
        targets = np.einsum("rk,knd->rnd", A, outs)
        if self.parity_estimator is None:
            template = default_parity_estimator(self._template())
        else:
            template = self.parity_estimator
        if self.n_outputs_ > 1 and not _supports_multioutput(template):
            template = MultiOutputRegressor(template)
        rng = check_random_state(self.random_state)
        self.parity_estimators_ = []
        for j in range(self.r):
            est = clone(template)
            if est.get_params().get("random_state", 0) is None:
                est.set_params(random_state=rng.randint(np.iinfo(np.int32).max))
            t = targets[j][:, 0] if self.n_outputs_ == 1 else targets[j]
            self.parity_estimators_.append(est.fit(X, t))
        return self

    def member_outputs(self, X, _checked=False):
        """Raw outputs of every member, shape (k, n, d)."""
        if not _checked:
            check_is_fitted(self, "n_outputs_")
            X = check_array(X, dtype=np.float64)
            if X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, the ensemble was fitted on {self.n_features_in_}."
                )
        outs = [raw_output(m, X) for m in self.members]
        widths = {o.shape[1] for o in outs}
        if len(widths) != 1:
            raise ValueError(f"members give raw outputs of different widths {sorted(widths)}.")
        return np.stack(outs)

    def parity_predict(self, X, j):
        """Raw output of parity member ``j`` on queries ``X``, shape (n, d)."""
        check_is_fitted(self, "n_outputs_")
        if not 0 <= int(j) < self.r:
            raise ValueError(f"parity index j={j} out of range for r={self.r}.")
        X = check_array(X, dtype=np.float64)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, the ensemble was fitted on {self.n_features_in_}."
            )
        out = np.asarray(self.parity_estimators_[int(j)].predict(X), dtype=np.float64)
        out = out.reshape(X.shape[0], self.n_outputs_)
        if not np.all(np.isfinite(out)):
            raise ValueError(f"parity member {j} produced non-finite outputs.")
        return out

    def decode(self, member_outputs, parity_outputs, available, return_status=False):
        """Rebuild missing members' outputs; same contract as ``CodedPredictor.decode``.

        Parameters
        ----------
        member_outputs : array of shape (k, n, d)
        parity_outputs : array of shape (r, n, d)
        available : bool array of shape (k + r,)
        return_status : bool, default=False

        Returns
        -------
        outputs : ndarray (k, n, d)
        reconstructed : ndarray of bool (k,)
        status : ndarray of int (k,), only with ``return_status``
        """
        check_is_fitted(self, "n_outputs_")
        k, r, d = self.k, self.r, self.n_outputs_
        available = np.asarray(available)
        if available.shape != (k + r,):
            raise ValueError(f"available must have shape (k + r,) = ({k + r},), got {available.shape}.")
        available = available.astype(bool)
        member_outputs = np.asarray(member_outputs, dtype=np.float64)
        parity_outputs = np.asarray(parity_outputs, dtype=np.float64)
        if member_outputs.ndim != 3 or member_outputs.shape[0] != k or member_outputs.shape[2] != d:
            raise ValueError(f"member_outputs must have shape ({k}, n, {d}), got {member_outputs.shape}.")
        n = member_outputs.shape[1]
        if parity_outputs.shape != (r, n, d):
            raise ValueError(f"parity_outputs must have shape ({r}, {n}, {d}), got {parity_outputs.shape}.")
        if not (np.all(np.isfinite(member_outputs[available[:k]]))
                and np.all(np.isfinite(parity_outputs[available[k:]]))):
            raise ValueError("available member or parity outputs contain NaN or infinity.")
        out, rec, ok = linear_decode(self.code_matrix_, member_outputs, parity_outputs, available)
        status = np.where(rec, DECODED, EXACT)
        if not ok:
            lost = np.flatnonzero(~available[:k] & ~rec)
            if self.on_unrecoverable == "raise":
                raise UnrecoverableGroupError(
                    f"members {lost.tolist()} are missing and cannot be rebuilt with the "
                    f"{int(available[k:].sum())} available parities."
                )
            out[lost] = self.default_outputs_[lost][:, None, :]
            rec[lost] = True
            status[lost] = DEFAULT
        return (out, rec, status) if return_status else (out, rec)

    def combine_outputs(self, outputs, available=None):
        """Ensemble raw output (n, d) from member outputs (k, n, d).

        With ``available`` (k,), missing members are left out: ``"mean"``
        averages the others; ``"sum"`` substitutes each missing shard's mean
        training contribution. This is the no-parity baseline.
        """
        outputs = np.asarray(outputs, dtype=np.float64)
        if available is None:
            available = np.ones(self.k, dtype=bool)
        available = np.asarray(available, dtype=bool)
        if self.combine == "mean":
            if not available.any():
                return np.broadcast_to(self.default_outputs_.mean(axis=0), outputs.shape[1:]).copy()
            return outputs[available].mean(axis=0)
        filled = np.where(available[:, None, None], outputs, self.default_outputs_[:, None, :])
        return filled.sum(axis=0)

    def outputs_to_prediction(self, raw):
        """Map ensemble raw outputs (n, d) to labels or values."""
        raw = np.asarray(raw, dtype=np.float64)
        if self._is_classifier():
            return np.asarray(self._template().classes_)[_raw_to_index(raw)]
        return raw[..., 0] if raw.shape[-1] == 1 else raw

    def predict(self, X, available=None, return_reconstructed=False):
        """Ensemble predictions with missing members rebuilt.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        available : bool array of shape (k + r,), default=all available
            Which members and parity members answer; only those are run.
        return_reconstructed : bool, default=False
            Also return the (k,) mask of rebuilt members.

        Returns
        -------
        predictions : ndarray of shape (n,) or (n, d)
        reconstructed : ndarray of bool, shape (k,), optional
        """
        check_is_fitted(self, "n_outputs_")
        X = check_array(X, dtype=np.float64)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, the ensemble was fitted on {self.n_features_in_}."
            )
        k, r = self.k, self.r
        if available is None:
            available = np.ones(k + r, dtype=bool)
        available = np.asarray(available, dtype=bool)
        if available.shape != (k + r,):
            raise ValueError(f"available must have shape ({k + r},), got {available.shape}.")
        outs = np.full((k, X.shape[0], self.n_outputs_), np.nan)
        for i in np.flatnonzero(available[:k]):
            outs[i] = raw_output(self.members[i], X)
        parity = np.full((r, X.shape[0], self.n_outputs_), np.nan)
        if available[:k].all():
            available = available.copy()
            available[k:] = False  # nothing to rebuild: parity members are not run
        else:
            for j in np.flatnonzero(available[k:]):
                parity[j] = self.parity_predict(X, j)
        dec, rec = self.decode(outs, parity, available)
        pred = self.outputs_to_prediction(self.combine_outputs(dec))
        return (pred, rec) if return_reconstructed else pred

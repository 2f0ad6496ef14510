"""Shared machinery of coded predictors: group validation, decoding policy, serving helpers.

A coded predictor serves k query batches (one per model instance, a *group*)
plus r parity batches. Subclasses say how parity queries are made
(``_encode``), how parity outputs are computed (``_parity_raw``) and how
missing outputs are rebuilt (``_decode_missing``); this base class owns the
input checks, the policy for unrecoverable groups and the mapping from raw
outputs to predictions, so every code behaves the same towards a server.
"""

import numpy as np
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.utils.validation import check_array, check_is_fitted

from ._codes import raw_output

_POLICIES = ("default", "raise")

#: Per-slot status codes returned by ``decode(..., return_status=True)``.
EXACT, DECODED, DEFAULT = 0, 1, 2


class UnrecoverableGroupError(RuntimeError):
    """More slots of a group are missing than the code can rebuild."""


def default_raw_output(estimator, raw):
    """Raw output row used when a slot cannot be rebuilt.

    Regressors: the mean output (the best constant under squared error).
    Classifiers: a raw output that predicts the most frequently predicted
    class (the mean raw output of the rows predicted as that class, or the
    most confident such row if the mean falls into another class).
    """
    if not is_classifier(estimator):
        return raw.mean(axis=0)
    pred = _raw_to_index(raw)
    top = np.bincount(pred).argmax()
    rows = raw[pred == top]
    mean = rows.mean(axis=0)
    if _raw_to_index(mean[None, :])[0] == top:
        return mean
    margin = rows[:, 0] if raw.shape[1] == 1 else rows[:, top]
    return rows[np.argmax(np.abs(margin))]


def accepts_nan(estimator):
    """Whether ``estimator`` declares that it handles NaN inputs (scikit-learn tags).

    A Pipeline is asked about its final step when its earlier steps pass NaN
    through (scikit-learn's Pipeline only reports its first step).
    """
    from sklearn.utils import get_tags

    try:
        if type(estimator).__name__ == "Pipeline":
            return all(bool(get_tags(step).input_tags.allow_nan)
                       for _, step in estimator.steps if step not in (None, "passthrough"))
        return bool(get_tags(estimator).input_tags.allow_nan)
    except Exception:  # noqa: BLE001 - a model without scikit-learn tags
        return False


def _check_queries(X, allow_nan):
    """2-D float64 queries; infinities always refused, NaN only if the base takes it."""
    X = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan" if allow_nan else True)
    if allow_nan and np.isinf(X).any():
        raise ValueError("Input contains infinity; only NaN (missing) values are accepted.")
    return X


def _raw_to_index(raw):
    """Class index from raw outputs (binary: margin > 0 means class 1)."""
    if raw.shape[-1] == 1:
        return (raw[..., 0] > 0).astype(np.intp)
    return np.argmax(raw, axis=-1)


class _CodedBase(BaseEstimator):
    """Common serving API; subclasses set ``k``, ``r``, ``on_unrecoverable``, ``base_estimator``."""

    # The base model is a deployed, already fitted model: the parity is trained
    # to mirror *that* model. sklearn's default clone would refit-clone it into
    # an unfitted copy, so we share it (as sklearn.frozen.FrozenEstimator does)
    # and clone everything else.
    def __sklearn_clone__(self):
        params = self.get_params(deep=False)
        base = params.pop("base_estimator")
        new = type(self)(base_estimator=base, **{k: clone(v, safe=False) for k, v in params.items()})
        return new

    def set_params(self, **params):
        """Set parameters; the shared, fitted base model is never modified.

        ``base_estimator__<param>`` would change the deployed model that
        :func:`~sklearn.base.clone` shares between copies (and that the
        parity models were trained to mirror), so it is refused unless the
        value is already the base's (as ``set_params(**get_params())`` does).
        Replace the base with ``base_estimator=<another fitted model>``.
        """
        nested = {key: v for key, v in params.items() if key.startswith("base_estimator__")}
        if nested:
            current = self.base_estimator.get_params(deep=True)
            changed = sorted(key for key, v in nested.items()
                             if key[len("base_estimator__"):] not in current
                             or current[key[len("base_estimator__"):]] is not v
                             and current[key[len("base_estimator__"):]] != v)
            if changed:
                raise ValueError(
                    f"cannot set {changed}: base_estimator is the fitted, deployed model "
                    "(shared by clones, mirrored by the parity models); pass "
                    "base_estimator=<another fitted model> instead.")
            params = {key: v for key, v in params.items() if key not in nested}
        return super().set_params(**params)

    def __sklearn_tags__(self):
        # A coded predictor is a classifier/regressor exactly when its base is,
        # so scikit-learn picks the right CV splitter and default scorer.
        tags = super().__sklearn_tags__()
        try:
            from sklearn.utils import get_tags

            base_tags = get_tags(self.base_estimator)
            tags.estimator_type = base_tags.estimator_type
            tags.input_tags.allow_nan = base_tags.input_tags.allow_nan
        except Exception:  # noqa: BLE001 - base without tags: keep the defaults
            pass
        return tags

    def _allow_nan(self):
        return accepts_nan(self.base_estimator)

    # ------------------------------------------------------- scoring (tuning)
    def predict(self, X):
        """Degraded-mode predictions: each row as the code rebuilds it when its slot is lost.

        Consecutive rows form groups of k (the last one padded with
        ``pad_query_``); every slot is erased in turn and decoded from the
        other k - 1 base outputs and all r parities. This is what a client
        gets for a lost query, so :meth:`score` (accuracy or R² of these
        predictions) is the criterion to tune a code by, e.g. with
        ``GridSearchCV`` over ``parity_estimator__*``. Exact predictions are
        the base model's own ``predict``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, d)
        """
        check_is_fitted(self, "n_outputs_")
        X = _check_queries(X, self._allow_nan())
        n = X.shape[0]
        m = -(-n // self.k)
        rows = np.broadcast_to(self.pad_query_, (m * self.k, X.shape[1])).copy()
        rows[:n] = X
        X_group = rows.reshape(m, self.k, -1).transpose(1, 0, 2)
        X_group = self._check_group(X_group)
        base = raw_output(self.base_estimator, X_group.reshape(self.k * m, -1)).reshape(
            self.k, m, self.n_outputs_)
        P = self._encode(X_group)
        parity = np.stack([self.parity_predict(P, j) for j in range(self.r)])
        decoded = np.empty_like(base)
        for j in range(self.k):
            available = np.ones(self.k + self.r, dtype=bool)
            available[j] = False
            decoded[j] = self.decode(base, parity, available)[0][j]
        raw = decoded.transpose(1, 0, 2).reshape(m * self.k, self.n_outputs_)[:n]
        return self.outputs_to_prediction(raw)

    def score(self, X, y, sample_weight=None):
        """Accuracy (classifier base) or R² (regressor base) of :meth:`predict`."""
        from sklearn.metrics import accuracy_score, r2_score

        pred = self.predict(X)
        if is_classifier(self.base_estimator):
            return float(accuracy_score(y, pred, sample_weight=sample_weight))
        return float(r2_score(y, pred, sample_weight=sample_weight))

    # ------------------------------------------------------------------ checks
    def _check_base(self):
        check_is_fitted(self.base_estimator)
        if self.on_unrecoverable not in _POLICIES:
            raise ValueError(
                f"on_unrecoverable must be one of {_POLICIES}, got {self.on_unrecoverable!r}."
            )

    def _fit_common(self, X):
        """Checks shared by every fit; returns validated X and its raw outputs."""
        self._check_base()
        X = _check_queries(X, accepts_nan(self.base_estimator))
        if X.shape[0] < self.k:
            raise ValueError(f"need at least k={self.k} rows to build groups, got {X.shape[0]}.")
        n_base = getattr(self.base_estimator, "n_features_in_", X.shape[1])
        if n_base != X.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} features, but the base estimator was fitted on {n_base}."
            )
        self.n_features_in_ = X.shape[1]
        raw = raw_output(self.base_estimator, X)
        self.n_outputs_ = raw.shape[1]
        # Remember whether the base predicts 1-D values so predictions keep its shape.
        self._base_1d = self.n_outputs_ == 1
        self.default_output_ = default_raw_output(self.base_estimator, raw)
        # A pad query for partial groups: the feature means, with its exact base output.
        # nanmean: with missing values, the mean of what is observed (an
        # all-missing column pads with NaN, which the base accepts).
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                self.pad_query_ = np.nanmean(X, axis=0)
        self.pad_output_ = raw_output(self.base_estimator, self.pad_query_[None, :])[0]
        return X, raw

    def _random_groups(self, n_samples, n_groups, rng):
        """Index array (n_groups, k): slot i of group g is training row idx[g, i].

        Each slot walks its own random permutation of the rows (cycled when
        more groups than rows are asked for), so every row appears in every
        slot about equally often and groups are random k-tuples.
        """
        reps = int(np.ceil(n_groups / n_samples))
        cols = [np.concatenate([rng.permutation(n_samples) for _ in range(reps)])[:n_groups]
                for _ in range(self.k)]
        return np.stack(cols, axis=1)

    def _check_group(self, X_group):
        """Validate a group: (k, n, p) array or list of k arrays (n, p)."""
        check_is_fitted(self, "n_outputs_")
        if isinstance(X_group, (list, tuple)):
            if len(X_group) != self.k:
                raise ValueError(f"group has {len(X_group)} query batches, expected k={self.k}.")
            batches = [_check_queries(x, self._allow_nan()) for x in X_group]
            if len({b.shape[0] for b in batches}) != 1:
                raise ValueError(
                    "query batches of a group must have the same number of rows, got "
                    f"{[b.shape[0] for b in batches]}; pad them with pad_group()."
                )
            if len({b.shape[1] for b in batches}) != 1:
                raise ValueError(
                    f"query batches have different feature counts {[b.shape[1] for b in batches]}."
                )
            X_group = np.stack(batches)
        else:
            X_group = np.asarray(X_group, dtype=np.float64)
            if X_group.ndim != 3:
                raise ValueError(
                    f"X_group must have shape (k, n, n_features), got {X_group.shape}."
                )
            if X_group.shape[0] != self.k:
                raise ValueError(f"group has {X_group.shape[0]} query batches, expected k={self.k}.")
            if np.isinf(X_group).any() or (not self._allow_nan() and np.isnan(X_group).any()):
                raise ValueError("X_group contains NaN or infinity." if not self._allow_nan()
                                 else "X_group contains infinity.")
        if X_group.shape[2] != self.n_features_in_:
            raise ValueError(
                f"X_group has {X_group.shape[2]} features per query, but the coded predictor "
                f"was fitted on {self.n_features_in_}."
            )
        return X_group

    def _check_available(self, available):
        available = np.asarray(available)
        if available.shape != (self.k + self.r,):
            raise ValueError(
                f"available must be a boolean mask of shape (k + r,) = ({self.k + self.r},), "
                f"got shape {available.shape}."
            )
        if available.dtype != bool:
            if not np.all(np.isin(available, (0, 1))):
                raise ValueError("available must be a boolean mask.")
            available = available.astype(bool)
        return available

    # ------------------------------------------------------------ serving API
    def encode(self, X_group):
        """Parity queries for a group.

        Parameters
        ----------
        X_group : array-like of shape (k, n, n_features) or list of k arrays

        Returns
        -------
        P : ndarray of shape (r, n, q)
        """
        return self._encode(self._check_group(X_group))

    def parity_predict(self, P, j):
        """Raw output of parity ``j`` on parity queries.

        Parameters
        ----------
        P : ndarray of shape (r, n, q) (as returned by :meth:`encode`) or (n, q)
        j : int, 0 <= j < r

        Returns
        -------
        out : ndarray of shape (n, n_outputs)
        """
        check_is_fitted(self, "n_outputs_")
        if not 0 <= int(j) < self.r:
            raise ValueError(f"parity index j={j} out of range for r={self.r}.")
        P = np.asarray(P, dtype=np.float64)
        if P.ndim == 3:
            P = P[j]
        if P.ndim != 2:
            raise ValueError(f"parity queries must have shape (r, n, q) or (n, q), got {P.shape}.")
        out = self._parity_raw(P, int(j))
        if not np.all(np.isfinite(out)):
            raise ValueError(f"parity model {j} produced non-finite outputs.")
        return out

    def base_predict_raw(self, X):
        """Raw output of the base model, shape (n, n_outputs)."""
        return raw_output(self.base_estimator, X)

    def decode(self, base_outputs, parity_outputs, available, return_status=False):
        """Rebuild the outputs of unavailable slots.

        Parameters
        ----------
        base_outputs : array of shape (k, n, d)
            Raw outputs of the k slots; rows of unavailable slots are ignored
            (may be NaN).
        parity_outputs : array of shape (r, n, d)
            Raw parity outputs (NaN where missing).
        available : bool array of shape (k + r,)
            Which of the k base slots and r parities answered.
        return_status : bool, default=False
            Also return a per-slot status: 0 exact, 1 decoded, 2 default.

        Returns
        -------
        outputs : ndarray of shape (k, n, d)
        reconstructed : ndarray of bool, shape (k,)
            True for every slot whose output is not the base model's own
            (decoded, or the default prediction when unrecoverable).
        status : ndarray of int, shape (k,)
            Only when ``return_status``.

        Raises
        ------
        UnrecoverableGroupError
            More slots are missing than can be rebuilt and
            ``on_unrecoverable="raise"``.
        """
        check_is_fitted(self, "n_outputs_")
        available = self._check_available(available)
        base_outputs = np.asarray(base_outputs, dtype=np.float64)
        parity_outputs = np.asarray(parity_outputs, dtype=np.float64)
        d = self.n_outputs_
        if base_outputs.ndim != 3 or base_outputs.shape[0] != self.k or base_outputs.shape[2] != d:
            raise ValueError(
                f"base_outputs must have shape (k, n, d) = ({self.k}, n, {d}), "
                f"got {base_outputs.shape}."
            )
        n = base_outputs.shape[1]
        if parity_outputs.shape != (self.r, n, d):
            raise ValueError(
                f"parity_outputs must have shape (r, n, d) = ({self.r}, {n}, {d}), "
                f"got {parity_outputs.shape}."
            )
        k = self.k
        if not np.all(np.isfinite(base_outputs[available[:k]])):
            raise ValueError("available base outputs contain NaN or infinity.")
        if not np.all(np.isfinite(parity_outputs[available[k:]])):
            raise ValueError("available parity outputs contain NaN or infinity.")
        outputs, reconstructed, ok = self._decode_missing(base_outputs, parity_outputs, available)
        status = np.where(reconstructed, DECODED, EXACT)
        if not ok:
            lost = np.flatnonzero(~available[:k] & ~reconstructed)
            if self.on_unrecoverable == "raise":
                raise UnrecoverableGroupError(
                    f"{int((~available[:k]).sum())} of k={k} slots and "
                    f"{int((~available[k:]).sum())} of r={self.r} parities are missing; "
                    f"slots {lost.tolist()} cannot be rebuilt."
                )
            outputs[lost] = self.default_output_
            reconstructed[lost] = True
            status[lost] = DEFAULT
        if return_status:
            return outputs, reconstructed, status
        return outputs, reconstructed

    def can_decode(self, available):
        """Whether the answered outputs determine every missing slot well.

        True when no slot is missing, or when the code can rebuild the
        missing slots from the answered base outputs and parities within its
        conditioning guard. A server that gets False waits for more outputs
        instead of decoding.

        Parameters
        ----------
        available : bool array of shape (k + r,)
        """
        check_is_fitted(self, "n_outputs_")
        return bool(self._can_decode(self._check_available(available)))

    def decode_amplification(self, available):
        """Error amplification of decoding this erasure pattern (see :func:`decode_amplification`).

        NaN for codes without a linear decoder (:class:`LearnedCode`).
        """
        check_is_fitted(self, "n_outputs_")
        return float(self._amplification(self._check_available(available)))

    def _can_decode(self, available):  # pragma: no cover - overridden
        raise NotImplementedError

    def _amplification(self, available):
        return float("nan")

    def outputs_to_prediction(self, raw):
        """Map raw outputs (n, d) (or (..., n, d)) to predictions in the base's space.

        Classifiers: class labels from ``classes_`` (binary margin > 0 is
        ``classes_[1]``). Regressors: values, 1-D when the base predicts 1-D.
        """
        check_is_fitted(self, "n_outputs_")
        raw = np.asarray(raw, dtype=np.float64)
        if raw.shape[-1] != self.n_outputs_:
            raise ValueError(f"raw outputs must have {self.n_outputs_} columns, got {raw.shape}.")
        if is_classifier(self.base_estimator):
            return np.asarray(self.base_estimator.classes_)[_raw_to_index(raw)]
        return raw[..., 0] if self._base_1d else raw

    def predict_group(self, X_group, available_mask=None, return_status=False):
        """Predictions for a group with unavailable slots rebuilt.

        Only the available slots' base outputs and available parities are
        computed, as a server would.

        Parameters
        ----------
        X_group : array-like of shape (k, n, n_features) or list of k arrays
        available_mask : bool array of shape (k + r,), default=all available
        return_status : bool, default=False
            Also return the per-slot status (0 exact, 1 decoded, 2 default).

        Returns
        -------
        predictions : ndarray of shape (k, n) or (k, n, d)
        reconstructed : ndarray of bool, shape (k,)
        """
        X_group = self._check_group(X_group)
        k, n = X_group.shape[:2]
        if available_mask is None:
            available_mask = np.ones(k + self.r, dtype=bool)
        available = self._check_available(available_mask)
        d = self.n_outputs_
        base = np.full((k, n, d), np.nan)
        for i in np.flatnonzero(available[:k]):
            base[i] = raw_output(self.base_estimator, X_group[i])
        parity = np.full((self.r, n, d), np.nan)
        if available[:k].all():
            # Nothing to rebuild: parity queries are not even encoded.
            available = available.copy()
            available[k:] = False
        elif available[k:].any():
            P = self._encode(X_group)
            for j in np.flatnonzero(available[k:]):
                parity[j] = self.parity_predict(P, j)
        out = self.decode(base, parity, available, return_status=return_status)
        return (self.outputs_to_prediction(out[0]),) + tuple(out[1:])

    def pad_group(self, batches):
        """Complete a partial group so it can be encoded.

        A time-out may close a group with fewer than k batches, or batches
        of different sizes. Missing batches and missing rows are filled with
        ``pad_query_`` (the training feature means), whose base output
        ``pad_output_`` is known, so a padded slot never needs computing or
        decoding: mark it available and put ``pad_output_`` in its rows.

        Parameters
        ----------
        batches : list of 1..k arrays of shape (n_i, n_features)

        Returns
        -------
        X_group : ndarray of shape (k, max n_i, n_features)
        n_rows : ndarray of int, shape (k,)
            Real rows per slot (0 for wholly padded slots).
        """
        check_is_fitted(self, "n_outputs_")
        if not 1 <= len(batches) <= self.k:
            raise ValueError(f"pad_group takes 1..k={self.k} batches, got {len(batches)}.")
        batches = [_check_queries(b, self._allow_nan()) for b in batches]
        for b in batches:
            if b.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"batch has {b.shape[1]} features, expected {self.n_features_in_}."
                )
        n = max(b.shape[0] for b in batches)
        X_group = np.broadcast_to(self.pad_query_, (self.k, n, self.n_features_in_)).copy()
        n_rows = np.zeros(self.k, dtype=int)
        for i, b in enumerate(batches):
            X_group[i, : b.shape[0]] = b
            n_rows[i] = b.shape[0]
        return X_group, n_rows

    @property
    def classes_(self):
        """Class labels of the base classifier."""
        return self.base_estimator.classes_

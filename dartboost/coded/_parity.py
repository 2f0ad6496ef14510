"""Parity models (ParM): learned parity computations over encoded queries.

Kosaian, Rashmi & Venkataraman, "Parity Models: Erasure-Coded Resilience for
Prediction Serving Systems", SOSP 2019. A parity model ``F_P`` is trained so
that ``F_P(E(x_1, ..., x_k)) ~= sum_i F(x_i)`` on the base model's raw outputs;
a missing ``F(x_j)`` is then ``F_P(P) - sum_{i != j} F(x_i)``.
"""

import numpy as np
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.multioutput import MultiOutputRegressor
from sklearn.utils import check_random_state

from ._base import _CodedBase
from ._codes import (check_encoder, check_k_r, code_matrix, decode_amplification,
                     linear_decode)

__all__ = ["CodedPredictor", "ParityModel", "default_parity_estimator"]

# Classifier -> regressor of the same family, with the parameters that carry
# over. ParM trains a parity model of the base's architecture; for a
# classifier that means the regressor counterpart fitted on margins.
_FAMILY = {
    "MLPClassifier": ("sklearn.neural_network", "MLPRegressor"),
    "NeuralClassifier": ("dartboost.gpu", "NeuralRegressor"),
    "DartClassifier": ("dartboost", "DartRegressor"),
    "HistGradientBoostingClassifier": ("sklearn.ensemble", "HistGradientBoostingRegressor"),
    "GradientBoostingClassifier": ("sklearn.ensemble", "GradientBoostingRegressor"),
    "RandomForestClassifier": ("sklearn.ensemble", "RandomForestRegressor"),
    "ExtraTreesClassifier": ("sklearn.ensemble", "ExtraTreesRegressor"),
    "DecisionTreeClassifier": ("sklearn.tree", "DecisionTreeRegressor"),
    "KNeighborsClassifier": ("sklearn.neighbors", "KNeighborsRegressor"),
    "LogisticRegression": ("sklearn.linear_model", "Ridge"),
    "LinearSVC": ("sklearn.linear_model", "Ridge"),
}
# Parameters whose meaning differs between a classifier and its regressor
# counterpart (losses on labels, class weights, scoring) are not carried over;
# for linear models the solver settings differ as well.
_DROP = {"loss", "class_weight", "criterion", "scoring"}
_DROP_LINEAR = _DROP | {"C", "penalty", "solver", "l1_ratio", "multi_class", "dual",
                        "intercept_scaling", "max_iter", "tol", "fit_intercept"}


def default_parity_estimator(base_estimator):
    """An unfitted regressor of the same family as ``base_estimator``, with more capacity.

    Known classifiers map to their regressor counterpart (``MLPClassifier`` ->
    ``MLPRegressor``, ``DartClassifier`` -> ``DartRegressor``, dartboost.gpu
    ``NeuralClassifier`` -> ``NeuralRegressor`` (torch MLP/CNN), tree
    ensembles -> their regressors, linear models -> ``Ridge``) with shared
    hyper-parameters (architecture, learning rate) copied; regressors are
    cloned; a :class:`~sklearn.pipeline.Pipeline` keeps its preprocessing
    steps (unfitted) around the counterpart of its final step.

    A parity learns sums of k outputs, a harder target than the base's own
    task, and with the base's own budget it underfits (docs/coded.md,
    "Measured"). So boosted models get twice the base's boosting rounds, and
    MLPs at least 500 epochs on standardised targets.

    Raises
    ------
    ValueError
        When no counterpart is known; pass ``parity_estimator`` explicitly.
    """
    if type(base_estimator).__name__ == "Pipeline":
        steps = [(name, clone(step)) for name, step in base_estimator.steps[:-1]]
        final_name, final = base_estimator.steps[-1]
        return type(base_estimator)(steps + [(final_name, default_parity_estimator(final))])
    if is_regressor(base_estimator):
        return _with_capacity(clone(base_estimator))
    name = type(base_estimator).__name__
    if not is_classifier(base_estimator) or name not in _FAMILY:
        raise ValueError(
            f"no default parity model for {name}; pass parity_estimator=<a scikit-learn "
            "regressor> (it is trained on the base model's raw outputs)."
        )
    module, cls_name = _FAMILY[name]
    import importlib

    cls = getattr(importlib.import_module(module), cls_name)
    reg = cls()
    ours = base_estimator.get_params(deep=False)
    theirs = reg.get_params(deep=False)
    drop = _DROP_LINEAR if cls_name == "Ridge" else _DROP
    shared = {p: v for p, v in ours.items() if p in theirs and p not in drop}
    return _with_capacity(reg.set_params(**shared))


# Boosting-round parameters doubled for a default parity (not n_estimators of
# forests: bagging more trees does not fit a harder target better).
_ROUNDS = {"DartRegressor": "n_estimators", "GradientBoostingRegressor": "n_estimators",
           "HistGradientBoostingRegressor": "max_iter"}


def _with_capacity(reg):
    name = type(reg).__name__
    if name in _ROUNDS:
        param = _ROUNDS[name]
        return reg.set_params(**{param: 2 * int(reg.get_params()[param])})
    if name == "MLPRegressor":
        from sklearn.compose import TransformedTargetRegressor
        from sklearn.preprocessing import StandardScaler

        reg.set_params(max_iter=max(500, int(reg.max_iter)))
        return TransformedTargetRegressor(regressor=reg, transformer=StandardScaler())
    return reg


# Regressors that fit a 2-D y natively although their tags do not say so.
_NATIVE_MULTIOUTPUT = {"MLPRegressor", "NeuralRegressor"}


def _supports_multioutput(est):
    """Whether ``est`` fits a 2-D target as one model (one network, one forest)."""
    if type(est).__name__ in _NATIVE_MULTIOUTPUT:
        return True
    if type(est).__name__ == "TransformedTargetRegressor" and est.regressor is not None:
        return _supports_multioutput(est.regressor)
    if type(est).__name__ == "Pipeline":
        return _supports_multioutput(est.steps[-1][1])
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(est).target_tags.multi_output)
    except ImportError:  # scikit-learn < 1.6
        return bool(est._get_tags().get("multioutput", False))


class CodedPredictor(_CodedBase):
    """Erasure-coded prediction with learned parity models (ParM).

    Wraps an already fitted model that is served from k instances. Each group
    of k query batches gets r parity batches, answered by r *parity models*
    trained so that parity ``j`` predicts ``sum_i A[j, i] F(x_i)``, the
    ``A``-weighted sum of the base model's raw outputs (margins/logits or
    regression values; never probabilities or labels). If up to r of the k
    base outputs are late or lost they are rebuilt by solving the linear
    code (plain subtraction for r = 1).

    Parameters
    ----------
    base_estimator : fitted estimator
        The deployed model. It is not refitted, and :func:`sklearn.base.clone`
        shares it rather than copying it unfitted.
    k : int, default=2
        Queries per coding group (ParM uses 2, 3, 4).
    r : int, default=1
        Parity queries per group; any r missing slots are recoverable.
    encoder : {"concat", "sum", "image"}, encoder object or callable, default="concat"
        How k queries become a parity query. ``"concat"`` puts the feature
        vectors side by side (k times the features; loses nothing, the best
        code measured on tabular data, see docs/coded.md); ``"sum"`` adds
        them (weighted by the code matrix when r > 1); ``"image"`` downsamples
        square images and tiles them (see :class:`ImageConcatEncoder`); a
        callable ``f(X_group) -> (n, q)`` or ``(r, n, q)``.
    parity_estimator : regressor, default=None
        Unfitted regressor cloned for each parity. ``None`` uses a model of
        the base's family (:func:`default_parity_estimator`). Wrapped in
        ``MultiOutputRegressor`` when the base has several outputs and the
        regressor is single-output.
    on_unrecoverable : {"default", "raise"}, default="default"
        More than r slots missing (or too few parities): fill the lost slots
        with ``default_output_`` (flagged as reconstructed, status 2), or
        raise :class:`UnrecoverableGroupError`.
    n_groups : int, default=None
        Number of encoded training groups; ``None`` uses two per training row
        (random groups are cheap, and the parity's target is harder than the
        base's own task).
    max_amplification : float, default=10.0
        Conditioning guard of the decoder: an erasure pattern whose decoded
        slots would carry more than this multiple of the parity models' error
        (:func:`~dartboost.coded.decode_amplification`) is not decoded; it is
        treated as unrecoverable (a pool waits for more outputs instead).
        ``numpy.inf`` decodes every pattern the code determines at all.
    random_state : int, RandomState or None, default=None
        Draws the training groups.

    Attributes
    ----------
    code_matrix_ : ndarray of shape (r, k)
        Encoding weights; row 0 is all ones.
    encoder_ : encoder object
    parity_estimators_ : list of r fitted regressors
    n_outputs_ : int
        Width d of the raw outputs.
    default_output_ : ndarray of shape (d,)
        Raw output used for unrecoverable slots.
    pad_query_, pad_output_ : ndarray
        Padding row for partial groups and its base output.
    n_features_in_ : int

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from sklearn.linear_model import LinearRegression
    >>> from dartboost.coded import CodedPredictor
    >>> X, y = make_regression(n_samples=200, n_features=5, random_state=0)
    >>> base = LinearRegression().fit(X, y)
    >>> cp = CodedPredictor(base, k=3, parity_estimator=LinearRegression()).fit(X)
    >>> pred, rebuilt = cp.predict_group(X[:30].reshape(3, 10, 5), [True, False, True, True])
    >>> bool(rebuilt[1]), bool(abs(pred[1] - base.predict(X[10:20])).max() < 1e-6)
    (True, True)
    """

    def __init__(self, base_estimator, k=2, r=1, encoder="concat", parity_estimator=None,
                 on_unrecoverable="default", n_groups=None, max_amplification=10.0,
                 random_state=None):
        self.base_estimator = base_estimator
        self.max_amplification = max_amplification
        self.k = k
        self.r = r
        self.encoder = encoder
        self.parity_estimator = parity_estimator
        self.on_unrecoverable = on_unrecoverable
        self.n_groups = n_groups
        self.random_state = random_state

    def fit(self, X, y=None):
        """Train the parity models on encoded groups of rows of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Unlabelled queries (e.g. the base model's training inputs).
        y : ignored
            Targets come from the base model; no labels are needed.

        Returns
        -------
        self
        """
        check_k_r(self.k, self.r)
        if not (isinstance(self.max_amplification, (int, float, np.floating))
                and self.max_amplification >= 1.0):
            raise ValueError(
                f"max_amplification must be a number >= 1, got {self.max_amplification!r}.")
        if self.n_groups is not None and (not isinstance(self.n_groups, (int, np.integer))
                                          or self.n_groups < 1):
            raise ValueError(f"n_groups must be a positive integer or None, got {self.n_groups!r}.")
        X, raw = self._fit_common(X)
        self.encoder_ = check_encoder(self.encoder, X.shape[1])
        A = code_matrix(self.k, self.r)
        self.code_matrix_ = A
        rng = check_random_state(self.random_state)
        n_groups = self.n_groups or 2 * X.shape[0]
        idx = self._random_groups(X.shape[0], n_groups, rng)
        P = self.encoder_.encode(np.transpose(X[idx], (1, 0, 2)), A)  # (r, G, q)
        targets = np.einsum("rk,gkd->rgd", A, raw[idx])  # (r, G, d)
        template = (default_parity_estimator(self.base_estimator)
                    if self.parity_estimator is None else self.parity_estimator)
        if self.n_outputs_ > 1 and not _supports_multioutput(template):
            template = MultiOutputRegressor(template)
        self.parity_estimators_ = []
        for j in range(self.r):
            est = clone(template)
            if "random_state" in est.get_params() and est.get_params()["random_state"] is None:
                # Reproducible parity models when the coded predictor is seeded.
                est.set_params(random_state=rng.randint(np.iinfo(np.int32).max))
            t = targets[j][:, 0] if self.n_outputs_ == 1 else targets[j]
            self.parity_estimators_.append(est.fit(P[j], t))
        self.n_parity_features_ = P.shape[2]
        return self

    def _encode(self, X_group):
        return self.encoder_.encode(X_group, self.code_matrix_)

    def _parity_raw(self, P, j):
        if P.shape[1] != self.n_parity_features_:
            raise ValueError(
                f"parity queries have {P.shape[1]} features, the parity models expect "
                f"{self.n_parity_features_}."
            )
        out = np.asarray(self.parity_estimators_[j].predict(P), dtype=np.float64)
        return out.reshape(P.shape[0], self.n_outputs_)

    def _decode_missing(self, base_outputs, parity_outputs, available):
        return linear_decode(self.code_matrix_, base_outputs, parity_outputs, available,
                             max_amplification=self.max_amplification)

    def _amplification(self, available):
        return decode_amplification(self.code_matrix_, available)

    def _can_decode(self, available):
        amp = self._amplification(available)
        return bool(np.isfinite(amp) and amp <= self.max_amplification)


#: Alias: ParM calls the learned parity computation a "parity model".
ParityModel = CodedPredictor

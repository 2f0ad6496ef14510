"""Learning to rank: :class:`DartRanker` (LambdaMART with DART dropout or MART).

Query groups follow the two common conventions:

- ``group=[n_1, n_2, ...]``: the size of each query, rows in query order
  (LightGBM's ``group``, XGBoost's ``group``);
- ``qid=[...]``: one query id per row, each query's rows contiguous
  (XGBoost's ``qid``; scikit-learn's ``GroupKFold`` keeps such rows
  contiguous in every fold).

Relevance labels are graded (``0`` = irrelevant, higher = better) with gain
``2**label - 1`` by default, so NDCG rewards putting the best documents first.
"""
import numbers

import numpy as np
from ._compat import Interval, StrOptions

from ._boosting import BaseBoosting
from ._common import effective_n_threads
from ._losses import CustomObjective
from ._ranking_loss import LambdaRankLoss, RankingTarget, query_offsets
from ._metrics import EvalData, Metric, _ndcg_metric
from ._model_format import FormatError, register_model_class
from .estimators import _SHARED_DOC, _shared_init_params

__all__ = ["DartRanker", "ndcg_score", "make_ranking_data"]


def _query_weights(sample_weight, offsets):
    """Per-query weights from per-row ``sample_weight`` (constant in a query)."""
    if sample_weight is None:
        return None
    first = sample_weight[offsets[:-1]]
    per_row = np.repeat(first, np.diff(offsets))
    if not np.allclose(per_row, sample_weight, rtol=1e-12, atol=0):
        raise ValueError("sample_weight must be constant within each query (ranking weights "
                         "are per query, as in LightGBM and XGBoost).")
    return first


def ndcg_score(y_true, y_score, *, group=None, qid=None, k=10, sample_weight=None,
               label_gain="exponential"):
    """Mean NDCG@k over queries.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Non-negative relevance grades.
    y_score : array-like of shape (n_samples,)
        Predicted scores (higher = ranked higher; ties keep row order).
    group, qid : array-like
        Query structure (see the module docstring); exactly one of them.
    k : int or None, default=10
        Truncation; ``None`` for the whole list.
    sample_weight : array-like of shape (n_samples,), default=None
        Constant within each query; queries are averaged with these weights.
    label_gain : {"exponential", "linear"}, default="exponential"
        Gain ``2**label - 1`` or ``label``.

    Returns
    -------
    float
        Queries without a relevant document count as 1.
    """
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_score = np.asarray(y_score, dtype=np.float64).ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true and y_score have different lengths ({y_true.shape[0]} and "
                         f"{y_score.shape[0]}).")
    _check_labels(y_true)
    offsets = query_offsets(y_true.shape[0], group, qid)
    sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    target = RankingTarget(y_true, offsets, _query_weights(sw, offsets), label_gain)
    return target.ndcg(y_score, k, effective_n_threads(None))


def _check_labels(y):
    if not np.all(np.isfinite(y)):
        raise ValueError("Relevance labels contain NaN or infinity.")
    if np.any(y < 0):
        raise ValueError(f"Relevance labels must be non-negative grades (0 = irrelevant); "
                         f"found {int(np.sum(y < 0))} negative label(s), e.g. {y[y < 0][0]}.")


def make_ranking_data(n_queries=2000, *, min_docs=10, max_docs=100, n_features=30,
                      noise=0.5, grade_quantiles=(0.5, 0.75, 0.9, 0.97), random_state=None):
    """Synthetic learning-to-rank data from a latent-relevance model.

    Each query ``q`` has a size ``m_q`` drawn uniformly from
    ``[min_docs, max_docs]``, three query-level features ``z_q ~ N(0, I)``
    (shared by its documents, like query length or category) and an
    unobserved offset ``b_q ~ N(0, 0.5**2)`` (some queries simply have more
    good documents). Each document has ``n_features - 3`` features
    ``x ~ N(0, I)`` followed by ``z_q``. Its latent relevance is

    ``s = x0 + 0.8 x1 x2 + 0.7 sin(2 x3) + 0.5 (x4**2 - 1) + 0.6 x5 z0
    + 0.4 [x6 > 0.5] + 0.3 z1 + b_q + eps``, ``eps ~ N(0, noise**2)``

    (a linear term, an interaction, a periodic and a quadratic effect, a
    query-dependent effect and a step; the remaining features are noise).
    The grade (0-4) is the number of ``grade_quantiles`` of ``s`` over the
    whole data set that ``s`` exceeds, so about 50/25/15/7/3 % of documents
    get grades 0/1/2/3/4 and many queries hold only a few relevant ones.

    Parameters
    ----------
    n_queries : int, default=2000
    min_docs, max_docs : int, default=10, 100
    n_features : int, default=30
        At least 10.
    noise : float, default=0.5
        Standard deviation of ``eps``: the irreducible part of relevance.
    grade_quantiles : sequence of float, default=(0.5, 0.75, 0.9, 0.97)
    random_state : int, Generator or None

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        Integer grades.
    qid : ndarray of shape (n_samples,)
        Query ids ``0 .. n_queries-1``, rows grouped by query.
    """
    if n_features < 10:
        raise ValueError("make_ranking_data needs n_features >= 10.")
    if not 1 <= min_docs <= max_docs:
        raise ValueError("Need 1 <= min_docs <= max_docs.")
    rng = np.random.default_rng(random_state)
    sizes = rng.integers(min_docs, max_docs + 1, size=n_queries)
    qid = np.repeat(np.arange(n_queries), sizes)
    n = qid.shape[0]
    z = rng.standard_normal((n_queries, 3))[qid]
    b = 0.5 * rng.standard_normal(n_queries)[qid]
    x = rng.standard_normal((n, n_features - 3))
    s = (x[:, 0] + 0.8 * x[:, 1] * x[:, 2] + 0.7 * np.sin(2 * x[:, 3])
         + 0.5 * (x[:, 4] ** 2 - 1) + 0.6 * x[:, 5] * z[:, 0] + 0.4 * (x[:, 6] > 0.5)
         + 0.3 * z[:, 1] + b + noise * rng.standard_normal(n))
    thresholds = np.quantile(s, grade_quantiles)
    y = np.searchsorted(thresholds, s, side="left").astype(np.float64)
    return np.hstack([x, z]), y, qid


@register_model_class
class DartRanker(BaseBoosting):
    __doc__ = """LambdaMART ranking trees with DART (or MART, ``boosting="mart"``).

    Trees fit the LambdaMART gradients of NDCG: for every pair of documents
    of a query with different grades, the RankNet logistic gradient of the
    pair scaled by how much NDCG would change if the two swapped places.
    Queries are given at ``fit`` as ``group=`` (sizes; LightGBM's convention)
    or ``qid=`` (one id per row, rows of a query contiguous; XGBoost's).

    Parameters
    ----------
    eval_at : int or None, default=10
        ``k`` of the NDCG@k used for early stopping, ``train_score_`` /
        ``validation_score_`` and :meth:`score` (``None``: whole list).
    lambdarank_truncation_level : int or None, default=None
        Only pairs whose better-placed document is in the current top
        ``lambdarank_truncation_level`` contribute, with the ideal DCG taken
        at that depth (LightGBM's parameter of the same name, default 30
        there). Cheaper on long queries and focuses on the top of the list.
        ``None``: all pairs (full-list NDCG).
    sigma : float, default=1.0
        Steepness of the pairwise logistic.
    lambdarank_norm : bool, default=True
        LightGBM's normalisation: a pair's NDCG change is divided by
        ``0.01 + |score difference|`` and each query's gradients are scaled
        by ``log2(1 + S) / S`` (``S``: the sum of its pair gradients), so
        already separated pairs and long queries do not dominate.
    label_gain : {"exponential", "linear"}, default="exponential"
        Gain ``2**label - 1`` or ``label``.
    objective : callable or None, default=None
        A custom objective instead of LambdaRank, LightGBM's convention:
        ``f(y_true, y_pred, sample_weight, group) -> (grad, hess)`` (or the
        shorter ``f(y_true, y_pred)``, ``f(y_true, y_pred, sample_weight)``)
        with ``y_true`` the grades, ``y_pred`` the raw scores ``(n,)`` and
        ``group`` the query sizes in row order. As for
        :class:`~dartboost.DartRegressor`'s ``objective``: baseline 0, no
        default metric (pass ``eval_metric="ndcg"``), not stored in model files.
""" + _SHARED_DOC + """
    Attributes
    ----------
    n_iter_ : int
    n_trees_per_iteration_ : int
        Always 1.
    train_score_, validation_score_ : list of float
        NDCG@``eval_at`` before the first and after each iteration (with
        early stopping; the validation split takes whole queries).
    best_iteration_ : int
    evals_result_, best_score_ : dict
        As in :class:`~dartboost.DartRegressor`.
    feature_importances_ : ndarray of shape (n_features,)
    tree_weights_ : ndarray of shape (n_iter_,)
    n_features_in_ : int

    Notes
    -----
    ``sample_weight`` must be constant within a query (a query weight).
    Queries with no relevant document give no gradient and count as NDCG 1.
    For cross-validation, split by query (``GroupKFold(groups=qid)``); with
    scikit-learn's metadata routing enabled, ``qid`` reaches ``fit`` and
    ``score`` via ``set_fit_request(qid=True).set_score_request(qid=True)``.

    Examples
    --------
    >>> from dartboost.ranking import DartRanker, make_ranking_data
    >>> X, y, qid = make_ranking_data(200, random_state=0)
    >>> ranker = DartRanker(n_estimators=20, random_state=0).fit(X, y, qid=qid)
    >>> scores = ranker.predict(X)  # higher = ranked higher within a query
    """

    _parameter_constraints = {
        **BaseBoosting._parameter_constraints,
        "eval_at": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "lambdarank_truncation_level": [Interval(numbers.Integral, 1, None, closed="left"),
                                        None],
        "sigma": [Interval(numbers.Real, 0, None, closed="neither")],
        "lambdarank_norm": ["boolean"],
        "label_gain": [StrOptions({"exponential", "linear"})],
        "objective": [callable, None],
    }

    def __init__(self, *, eval_at=10, lambdarank_truncation_level=None, sigma=1.0,
                 lambdarank_norm=True, label_gain="exponential", objective=None,
                 boosting="dart",
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
        self.eval_at = eval_at
        self.lambdarank_truncation_level = lambdarank_truncation_level
        self.sigma = sigma
        self.lambdarank_norm = lambdarank_norm
        self.label_gain = label_gain
        self.objective = objective

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, *, group=None, qid=None, sample_weight=None, eval_set=None,
            eval_group=None, eval_qid=None, eval_names=None, eval_sample_weight=None,
            eval_metric=None):
        """Fit the ranker.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Non-negative relevance grades.
        group : array-like of int, optional
            Query sizes in row order (sum = ``n_samples``).
        qid : array-like of shape (n_samples,), optional
            Query id per row; a query's rows must be contiguous.
        sample_weight : array-like of shape (n_samples,), optional
            Query weights repeated on every row of the query.
        eval_set : list of tuples, or one tuple, optional
            Validation queries ``(X_val, y_val[, sample_weight_val])``, scored
            after every iteration (``evals_result_``); early stopping, when on,
            uses the last one.
        eval_group, eval_qid : list of array-like, optional
            The query structure of each eval set (LightGBM's ``eval_group``);
            for a single set, its ``group``/``qid`` array itself is accepted.
        eval_names, eval_sample_weight, eval_metric
            As in :meth:`DartRegressor.fit`; ranking metrics are ``"ndcg"``
            (at ``eval_at``) and ``"ndcg@k"``, callables get a fourth
            argument ``group`` (query sizes).

        Returns
        -------
        self
        """
        # BaseBoosting.fit validates X/y and then calls the hooks below; the
        # query structure reaches them through these fit-scoped attributes.
        self._fit_query = (group, qid)
        self._eval_query = (eval_group, eval_qid)
        try:
            return super().fit(X, y, sample_weight=sample_weight, eval_set=eval_set,
                               eval_names=eval_names, eval_sample_weight=eval_sample_weight,
                               eval_metric=eval_metric)
        finally:
            del self._fit_query, self._eval_query

    def _make_target(self, y, query, sample_weight=None):
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 1:
            if y.ndim == 2 and y.shape[1] == 1:
                y = y.ravel()
            else:
                raise ValueError(f"DartRanker needs a 1-D y of relevance grades, got shape "
                                 f"{y.shape}.")
        _check_labels(y)
        offsets = query_offsets(y.shape[0], *query)
        return RankingTarget(y, offsets, _query_weights(sample_weight, offsets),
                             self.label_gain)

    def _encode_y(self, y, sample_weight):
        target = self._make_target(y, self._fit_query, sample_weight)
        # a query whose documents all share one grade has no pair to order
        lo = np.minimum.reduceat(target.labels, target.offsets[:-1])
        hi = np.maximum.reduceat(target.labels, target.offsets[:-1])
        if not np.any(hi > lo):
            raise ValueError("No query has documents with different relevance grades: there "
                             "is no pair to rank, so nothing to learn.")
        return target

    def _make_loss(self):
        if self._objective_is_custom:
            return CustomObjective(self.objective if callable(self.objective) else None, 1,
                                   targets=lambda y: (y.labels.copy(), (np.diff(y.offsets),)))
        return LambdaRankLoss(self.eval_at, self.lambdarank_truncation_level, self.sigma,
                              self.lambdarank_norm, effective_n_threads(self.n_jobs))

    def _take_y(self, y_enc, idx):
        return y_enc.take(idx)

    def _eval_sets(self, X, y, eval_set, eval_names, eval_sample_weight):
        if eval_set is not None and all(v is None for v in self._eval_query):
            raise ValueError("eval_set needs its query structure: pass eval_group= or "
                             "eval_qid= to fit.")
        return super()._eval_sets(X, y, eval_set, eval_names, eval_sample_weight)

    def _encode_eval_y(self, index, y, sample_weight):
        # eval_group/eval_qid: one array per set; a single set's own array
        # (a list of scalars) is accepted too
        query = []
        for values in self._eval_query:
            if values is not None and not (isinstance(values, (list, tuple)) and len(values)
                                           and np.ndim(values[0]) == 1):
                values = [values]
            if values is not None and index >= len(values):
                raise ValueError(f"eval_group/eval_qid has {len(values)} entries; eval set "
                                 f"{index} has none.")
            query.append(None if values is None else values[index])
        return self._make_target(y, query, sample_weight)

    def _validation_split(self, X, y_enc, sample_weight):
        """A random split of whole queries for early stopping."""
        n_queries = y_enc.n_queries
        if n_queries < 2:
            raise ValueError("Early stopping splits off whole queries for validation, but the "
                             "data has only one query; pass eval_set or set "
                             "early_stopping=False.")
        rng = np.random.default_rng([self._seed, 0x5EED])
        n_val = min(n_queries - 1, max(1, int(round(self.validation_fraction * n_queries))))
        is_val = np.zeros(n_queries, dtype=bool)
        is_val[rng.choice(n_queries, n_val, replace=False)] = True
        row_is_val = np.repeat(is_val, np.diff(y_enc.offsets))
        tr, va = np.flatnonzero(~row_is_val), np.flatnonzero(row_is_val)
        sw_tr = None if sample_weight is None else sample_weight[tr]
        sw_va = None if sample_weight is None else sample_weight[va]
        return X[tr], y_enc.take(tr), sw_tr, X[va], y_enc.take(va), sw_va

    # --- evaluation hooks (see BaseBoosting._metrics)
    _metric_names = ("ndcg", "ndcg@k")

    def _default_metric(self):
        return "ndcg"

    def _builtin_metric(self, name):
        if name in ("ndcg", "lambdarank"):
            k = self.eval_at
        elif isinstance(name, str) and name.startswith("ndcg@") and name[5:].isdigit() \
                and int(name[5:]) > 0:
            k = int(name[5:])
        else:
            return None
        label = "ndcg" if k is None else f"ndcg@{k}"
        return Metric(label, _ndcg_metric(k, effective_n_threads(self.n_jobs)), True)

    def _eval_data(self, name, y_enc, sample_weight):
        return EvalData(name, y_enc.labels, sample_weight, extra=(np.diff(y_enc.offsets),),
                        target=y_enc)

    def _eval_prediction(self, loss, raw):
        return raw[0]

    def _extra_state(self):
        # Everything a ranker needs beyond the shared state is in its params.
        return {"objective": "lambdarank"}

    def _load_extra_state(self, header):
        if header.get("objective", "lambdarank") != "lambdarank":
            raise FormatError(f"objective: unsupported ranking objective "
                              f"{header['objective']!r}")
        if header["n_trees_per_iteration"] != 1:
            raise FormatError("n_trees_per_iteration: a ranker has one tree per iteration")

    # -------------------------------------------------------------- predict
    _apply_is_3d = False

    def predict(self, X, iteration_range=None, raw_score=False, pred_leaf=False,
                pred_contrib=False):
        """Relevance scores, shape ``(n_samples,)``; rank a query's documents
        by decreasing score. The scores are raw (``raw_score`` changes
        nothing); ``iteration_range``, ``pred_leaf`` and ``pred_contrib`` as in
        :meth:`DartRegressor.predict`."""
        special = self._special_predict(X, iteration_range, raw_score, pred_leaf, pred_contrib)
        if special is not None:
            return special
        return self._raw_predict(X, iteration_range)[0]

    def staged_predict(self, X):
        """Yield scores after each iteration, with the weights the model had
        at that iteration."""
        for raw in self._staged_raw_predict(X):
            yield raw[0]

    def score(self, X, y, *, group=None, qid=None, sample_weight=None):
        """Mean NDCG@``eval_at`` of the predicted ranking.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        group, qid : array-like
            Query structure of ``X`` (one of them).
        sample_weight : array-like, optional

        Returns
        -------
        float
        """
        if group is None and qid is None:
            raise ValueError(
                "DartRanker.score needs the queries of X: pass group= or qid=. In "
                "cross-validation enable scikit-learn metadata routing and call "
                "ranker.set_score_request(qid=True), or score folds yourself.")
        return ndcg_score(y, self.predict(X), group=group, qid=qid, k=self.eval_at,
                          sample_weight=sample_weight, label_gain=self.label_gain)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

"""Dask estimators: a dartboost estimator whose ``fit`` trains on the workers.

``DaskDartRegressor`` *is* a :class:`~dartboost.DartRegressor` (same
parameters plus ``client`` and ``max_recoveries``): after ``fit`` it holds
an ordinary fitted model, ``to_local()`` returns it as a plain estimator, and
``predict`` on a dask collection runs block-wise on the workers (in-memory
input is predicted locally).
"""
import inspect

import numpy as np

from .._boosting import check_eval_list
from ..estimators import DartClassifier, DartRegressor
from ..ranking import DartRanker
from . import _categories, _data, _evaluation
from ._fit import DaskFit, baseline_statistics, run_fit

_DASK_PARAMS = (
    inspect.Parameter("client", inspect.Parameter.KEYWORD_ONLY, default=None),
    inspect.Parameter("max_recoveries", inspect.Parameter.KEYWORD_ONLY, default=3),
)


def _dask_init(local_cls):
    """``__init__`` with ``local_cls``'s parameters plus ``client`` and
    ``max_recoveries`` (scikit-learn reads parameters off the signature)."""
    sig = inspect.signature(local_cls.__init__)

    def __init__(self, *args, client=None, max_recoveries=3, **params):
        local_cls.__init__(self, *args, **params)
        self.client = client
        self.max_recoveries = max_recoveries

    params = list(sig.parameters.values()) + list(_DASK_PARAMS)
    __init__.__signature__ = sig.replace(parameters=params)
    return __init__


class _DaskMixin:
    _local_class = None

    def _get_client(self):
        if self.client is not None:
            return self.client
        from distributed import default_client
        return default_client()

    def _local_params(self):
        params = self.get_params(deep=False)
        params.pop("client")
        params.pop("max_recoveries")
        return params

    def _unsupported(self):
        if self.warm_start:
            raise ValueError("warm_start is not supported by dartboost.dask; a fit that "
                             "loses a worker resumes from its checkpoint by itself.")
        if not isinstance(self.max_recoveries, (int, np.integer)) or self.max_recoveries < 0:
            raise ValueError(f"max_recoveries must be a non-negative int, got "
                             f"{self.max_recoveries!r}.")

    def fit(self, X, y, sample_weight=None, eval_set=None, eval_names=None,
            eval_sample_weight=None, eval_metric=None):
        """Fit on dask collections whose partitions stay on the workers.

        Parameters
        ----------
        X : dask.array (n_samples, n_features) or dask.dataframe
            Known row chunks; NaN marks a missing value.
        y : dask.array or dask Series, partitioned like ``X``
        sample_weight : dask.array or dask Series, default=None
        eval_set : list of tuples, or one tuple, default=None
            ``(X_val, y_val[, sample_weight_val])`` of dask collections, scored
            after every iteration on the workers (``evals_result_``); early
            stopping, when on, scores the last one. Metrics must be means over
            rows (not ``auc``, ``average_precision`` or callables).
        eval_names, eval_sample_weight, eval_metric
            As for the local estimator's ``fit``.

        Returns
        -------
        self
        """
        return self._fit_dask(X, y, sample_weight,
                              evals=(eval_set, eval_names, eval_sample_weight, eval_metric))

    def _fit_dask(self, X, y, sample_weight, query=None, evals=(None, None, None, None)):
        self._validate_params()
        self._unsupported()
        client = self._get_client()
        X_given, y_given = X, y
        X, is_categorical, categories, lengths, held = _categories.prepare(
            client, X, self.categorical_features)
        parts, row_counts, n_features, names = _data.training_partitions(
            X, y, sample_weight, query, lengths if lengths is not None else True)
        local = self._local_class(**self._local_params())
        local._validate_params()
        local._seed = local._resolve_seed()
        local.n_features_in_ = n_features
        if names is not None:
            local.feature_names_in_ = names
        # as a local fit sets them (_fit_categorical): None when no feature
        # is categorical / no feature has labels
        local.is_categorical_ = is_categorical if is_categorical.any() else None
        local._categories = categories
        local.train_score_, local.validation_score_ = [], []
        y_arr, _ = _data.as_dask_array(y, "y")
        local._check_objective(False)  # a callable objective runs on the workers
        encode_y, row_weights = self._prepare_targets(local, y_arr, client)
        loss = local._make_loss()
        ranking = isinstance(self, DartRanker)
        baseline_statistics(loss, ranking)  # an unsupported loss fails before any work
        local.n_trees_per_iteration_ = loss.n_trees_per_iteration
        # monotonic and interaction constraints are decided on the summed
        # histograms, on the client: checked here as a local fit checks them
        local._fit_constraints = local._resolve_constraints(n_features,
                                                            local.is_categorical_)
        if sum(row_counts) < 2:
            raise ValueError("at least 2 training samples are required.")
        evaluation, eval_parts = _evaluation.resolve(
            local, X_given, y_given, *evals, sum(row_counts),
            lambda i, X_val: _encode_eval_X(i, X_val, categories, names),
            self._ranking_evaluation(local) if ranking else None)
        fit = DaskFit(client, local, parts, row_counts, n_features, self.max_recoveries)
        fit.add_eval_sets(eval_parts)
        if query is not None:  # before any split: the partitions as given
            _data.check_queries(client, query[0], [f[3] for f in fit.futures], row_counts)
            for s, (kind, _) in enumerate(self._eval_queries):
                _data.check_queries(client, kind, [f[3] for set_index, _, f in
                                                   fit.eval_futures if set_index == s],
                                    eval_parts[s][1], what=f"eval_set[{s}]")
        if evaluation is not None and evaluation.held_out:
            fit.hold_out(*self._validation_split(fit, local))
            if fit.n_samples < 2:
                raise ValueError(f"n_samples = {fit.n_samples} after the validation split; "
                                 "at least 2 training samples are required.")
        del held, parts, X, eval_parts  # the fit holds its partitions (futures) now
        run_fit(fit, local, loss, encode_y, _checker(self._local_class),
                sample_weight is not None or row_weights is not None, row_weights, ranking,
                evaluation)
        self.recoveries_ = fit.recoveries
        self._adopt(local)
        return self

    def _validation_split(self, fit, local):
        """``DaskFit.hold_out``'s arguments: the rows a local fit holds out
        for early stopping (``validation_fraction``)."""
        labels = fit.class_indices(local.classes_) if local._is_classifier else None
        return _evaluation.validation_rows(local, fit.n_samples, labels)

    def _adopt(self, local):
        for name, value in vars(local).items():
            if name.endswith("_") or name.startswith("_") and not name.startswith("__"):
                setattr(self, name, value)
        self._local = local

    def to_local(self):
        """The fitted model as a plain local estimator (a copy)."""
        import copy
        from sklearn.utils.validation import check_is_fitted
        check_is_fitted(self, "booster_")
        return copy.deepcopy(self._local)

    # ------------------------------------------------------------ predict
    def _blockwise(self, X, method, n_columns):
        from dask.base import is_dask_collection
        if not is_dask_collection(X):
            return getattr(self._local, method)(X)
        blocks, names = _data.as_blocks(X)
        model = self.to_local()
        # meta given: Dask would otherwise call the model on an empty block
        if n_columns is None:
            dtype = self._output_dtype(method)
            return blocks.map_blocks(_predict_block, model, method, names, drop_axis=1,
                                     dtype=dtype, meta=np.empty(0, dtype=dtype))
        return blocks.map_blocks(_predict_block, model, method, names, dtype=np.float64,
                                 chunks=(blocks.chunks[0], (n_columns,)),
                                 meta=np.empty((0, 0), dtype=np.float64))

    def _output_dtype(self, method):
        return np.float64

    def predict(self, X, **kwargs):
        if kwargs:
            return self._local.predict(X, **kwargs)
        return self._blockwise(X, "predict", None)


def _predict_block(block, model, method, names):
    if names is not None:  # a dataframe's partition: its columns, by name
        import pandas as pd
        block = pd.DataFrame(block, columns=names, copy=False)
    return getattr(model, method)(block)


def _encode_eval_X(index, X, categories, names):
    try:
        return _categories.encode_like(X, categories, names)
    except ValueError as exc:
        raise ValueError(f"eval_set[{index}]: {exc}") from None


def _class_weights(class_weight, classes, counts):
    """Per-class weights of ``class_weight`` from the global class counts,
    as scikit-learn's ``compute_sample_weight`` gives them on all labels:
    ``"balanced"`` is ``n / (n_classes * count)``."""
    from sklearn.utils.class_weight import compute_class_weight
    if isinstance(class_weight, str):  # "balanced" (the only string allowed)
        return counts.sum() / (classes.shape[0] * counts)
    # a dict needs no counts: each class's labels are given once
    return compute_class_weight(class_weight, classes=classes, y=classes)


def _checker(local_class):
    return local_class()._check_y


class DaskDartRegressor(_DaskMixin, DartRegressor):
    __doc__ = """Distributed :class:`~dartboost.DartRegressor` on Dask.

    Same parameters as :class:`~dartboost.DartRegressor`, plus ``client``
    (default: the current ``distributed`` client) and ``max_recoveries``
    (lost workers survived per fit, resuming from the newest checkpoint of a
    :class:`~dartboost.store.CheckpointCallback` in ``callbacks``). Losses:
    ``squared_error``, ``poisson``. See ``docs/dask.md``.
    """
    _local_class = DartRegressor
    __init__ = _dask_init(DartRegressor)

    def _prepare_targets(self, local, y, client):
        local._n_outputs = 1 if y.ndim == 1 else int(y.shape[1])
        local._y_1d = y.ndim == 1
        return DartRegressor()._encode_y_transform, None


class DaskDartClassifier(_DaskMixin, DartClassifier):
    __doc__ = """Distributed :class:`~dartboost.DartClassifier` on Dask.

    Same parameters as :class:`~dartboost.DartClassifier`, plus ``client``
    and ``max_recoveries`` (see :class:`DaskDartRegressor`). The classes are
    the distinct labels of all partitions (one small reduction).
    """
    _local_class = DartClassifier
    __init__ = _dask_init(DartClassifier)

    def _prepare_targets(self, local, y, client):
        from . import _worker
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D for a classifier, got {y.ndim}-D.")
        found = client.gather([client.submit(_worker.class_counts, part, pure=False)
                               for part in client.compute(list(y.to_delayed().ravel()))])
        classes = np.unique(np.concatenate([labels for labels, _ in found]))
        if classes.shape[0] < 2:
            raise ValueError(f"y contains only one class ({classes.tolist()[:1]}); a "
                             "classifier needs at least 2 classes.")
        local.classes_ = classes
        encoder = DartClassifier()
        encoder.classes_ = classes
        row_weights = None
        if local.class_weight is not None:
            counts = np.zeros(classes.shape[0], dtype=np.float64)
            for labels, n in found:
                counts[np.searchsorted(classes, labels)] += n
            row_weights = _worker.ClassWeights(_class_weights(local.class_weight, classes,
                                                              counts))
        return encoder._encode_y_transform, row_weights

    def _output_dtype(self, method):
        return self.classes_.dtype

    def predict_proba(self, X):
        return self._blockwise(X, "predict_proba", self.classes_.shape[0])


class DaskDartRanker(_DaskMixin, DartRanker):
    __doc__ = """Distributed :class:`~dartboost.ranking.DartRanker` on Dask.

    Same parameters as :class:`~dartboost.ranking.DartRanker`, plus
    ``client`` and ``max_recoveries`` (see :class:`DaskDartRegressor`).
    Queries come as ``group`` (query sizes, one chunk per partition of X) or
    ``qid`` (one id per row, partitioned like X); a query must lie within one
    partition (checked: a clear error otherwise), so LambdaRank's gradients
    and NDCG (eval sets, early stopping) are computed where the rows are.
    """
    _local_class = DartRanker
    __init__ = _dask_init(DartRanker)

    def fit(self, X, y, *, group=None, qid=None, sample_weight=None, eval_set=None,
            eval_group=None, eval_qid=None, eval_names=None, eval_sample_weight=None,
            eval_metric=None):
        """Fit on dask collections whose partitions stay on the workers.

        Parameters
        ----------
        X : dask.array (n_samples, n_features) or dask.dataframe
        y : dask.array or dask Series of relevance grades, partitioned like X
        group : dask.array of int, optional
            Query sizes in row order, one chunk per partition of X summing to
            its rows.
        qid : dask.array, optional
            Query id per row, partitioned like X; a query's rows contiguous
            and within one partition.
        sample_weight : dask.array, optional
            Query weights repeated on every row of the query.
        eval_set, eval_names, eval_sample_weight, eval_metric
            As for :class:`DaskDartRegressor` (dask collections; NDCG, a mean
            over queries, is computed partition-wise).
        eval_group, eval_qid : list of dask.array, optional
            The query structure of each eval set, as ``group``/``qid``.

        Returns
        -------
        self
        """
        if (group is None) == (qid is None):
            raise ValueError("Ranking needs query groups: pass exactly one of group= (query "
                             "sizes) or qid= (a query id per row).")
        n_sets = len(_evaluation.eval_set_list(eval_set))
        groups = check_eval_list(eval_group, n_sets, "eval_group")
        qids = check_eval_list(eval_qid, n_sets, "eval_qid")
        self._eval_queries = []
        for i, (g, q) in enumerate(zip(groups, qids)):
            if (g is None) == (q is None):
                raise ValueError(f"eval_set[{i}] needs its query structure: exactly one of "
                                 "eval_group[i] or eval_qid[i].")
            self._eval_queries.append(("group", g) if g is not None else ("qid", q))
        query = ("group", group) if group is not None else ("qid", qid)
        self._query_kind = query[0]
        try:
            return self._fit_dask(X, y, sample_weight, query,
                                  evals=(eval_set, eval_names, eval_sample_weight,
                                         eval_metric))
        finally:
            del self._eval_queries  # fit-scoped, as the local ranker's

    def _ranking_evaluation(self, local):
        import functools
        from . import _worker
        maker = DartRanker(label_gain=local.label_gain)._make_target
        return (self._eval_queries.__getitem__,
                lambda kind: functools.partial(_worker.ranking_target, maker, kind),
                self._query_kind)

    def _validation_split(self, fit, local):
        """A local ranker's validation split of whole queries: ``(train rows,
        validation rows, per-partition held-out queries or None)``."""
        sizes = fit.query_sizes(self._query_kind)
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(sizes))])
        train, validation = _evaluation.validation_rows(local, fit.n_samples,
                                                        offsets=offsets)
        if self._query_kind != "group":
            return train, validation, None  # qids are taken with their rows
        held = np.isin(offsets[:-1], validation)  # a query is held out whole
        bounds = np.cumsum([0] + [s.size for s in sizes])
        return train, validation, {p: held[bounds[p]:bounds[p + 1]]
                                   for p in range(len(sizes))}

    def _prepare_targets(self, local, y, client):
        import functools
        from . import _worker
        if y.ndim != 1:
            raise ValueError(f"DaskDartRanker needs a 1-D y of relevance grades, got "
                             f"{y.ndim}-D.")
        maker = DartRanker(label_gain=local.label_gain)._make_target
        kind = "group" if self._query_kind == "group" else "qid"
        return functools.partial(_worker.ranking_target, maker, kind), None

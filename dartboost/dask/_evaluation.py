"""Eval sets and early stopping on Dask: metrics computed where the rows are.

Every supported score is a weighted mean over rows (the loss, and LightGBM's
``l2``, ``l1``, ``binary_logloss``, ``multi_error``, ...; ``rmse`` is the
square root of one) or, for the ranker, over queries (NDCG; a query lies
within one partition), so each partition sends ``(weight, [mean, ...])`` and
the client combines them in partition order: ``sum(W_p m_p) / sum(W_p)``.
The values equal a local fit's up to floating-point rounding (~1e-15
relative), so the early-stopping decisions -- which compare them against
``tol`` -- are the local ones. Metrics that need all rows at once (``auc``,
``average_precision``, callables) are refused with a clear error rather
than evaluated on a gathered copy of the set.

The stopping rule is :class:`dartboost._boosting._StoppingRule`'s: the
first metric of ``eval_metric`` (or ``-loss`` when none is given), higher
is better, on the last eval set; patience ``n_iter_no_change``.
"""
import numpy as np

from .. import _metrics
from .._boosting import eval_set_entries, eval_set_list
from ._worker import EvalTarget

#: Built-in metrics that are weighted means over rows (``_metrics._wmean``).
MEAN_METRICS = ("l2", "l1", "mape", "poisson", "gamma", "gamma_deviance", "tweedie",
                "tweedie_deviance", "quantile", "huber", "binary_logloss", "binary_error",
                "multi_logloss", "multi_error")


class PartialScores:
    """A partition's weighted means (runs on the workers).

    Parameters
    ----------
    est : estimator
        A parameter-only copy of the local estimator (its ``_eval_data`` and
        ``_eval_prediction`` hooks; no model).
    loss : loss object
    fns : list of callable
        ``fn(EvalData, y_pred) -> float`` weighted means.
    with_loss : bool
        Also the loss's weighted mean (the default stopping score).
    """

    def __init__(self, est, loss, fns, with_loss):
        self.est = est
        self.loss = loss
        self.fns = fns
        self.with_loss = with_loss

    def __call__(self, y_enc, sample_weight, raw):
        weight = _set_weight(y_enc, sample_weight, raw.shape[1])
        if weight <= 0:
            return 0.0, None  # a partition of zero weight adds nothing
        values = []
        if self.with_loss:
            values.append(float(self.loss.loss(y_enc, raw, sample_weight)))
        if self.fns:
            data = self.est._eval_data("", y_enc, sample_weight)
            pred = self.est._eval_prediction(self.loss, raw)
            values.extend(float(fn(data, pred)) for fn in self.fns)
        return weight, values


def _set_weight(y_enc, sample_weight, n_rows):
    """What a partition's means are weighted by: its rows' total weight, or
    a ranking target's query weights (NDCG is a mean over queries, which lie
    within a partition)."""
    if hasattr(y_enc, "query_weight"):
        qw = y_enc.query_weight
        return float(y_enc.n_queries) if qw is None else float(np.sum(qw))
    return float(n_rows) if sample_weight is None else float(np.sum(sample_weight))


def combine(partials):
    """Weighted means of all partitions from their ``(weight, values)``."""
    total, sums = 0.0, None
    for weight, values in partials:
        if values is None:
            continue
        part = np.asarray(values, dtype=np.float64) * weight
        sums = part if sums is None else sums + part
        total += weight
    if sums is None:
        raise ValueError("an eval set has zero total sample weight.")
    return sums / total


class ScorePlan:
    """What is evaluated each iteration, and how the results read.

    ``metrics``: the fit's :class:`~dartboost._metrics.Metric` list (as the
    local fit resolves it); ``stop_on_metric``: early stopping compares the
    first metric (else ``-loss``).
    """

    def __init__(self, metrics, with_loss):
        self.metrics = []
        fns = []
        for metric in metrics:
            name = getattr(metric, "name", "")
            if isinstance(metric, _metrics.CallableMetric):
                raise ValueError(f"eval_metric {name!r} (a callable) is not supported by "
                                 "dartboost.dask: it needs all rows of a set at once; use a "
                                 f"built-in mean metric ({', '.join(MEAN_METRICS)}, rmse).")
            if name == "rmse":
                fns.append(_metrics._l2)
                self.metrics.append((metric, np.sqrt))
            elif name in MEAN_METRICS or name == "ndcg" or name.startswith("ndcg@"):
                # (a ranker's NDCG: a mean over queries)
                fns.append(metric.fn)
                self.metrics.append((metric, None))
            else:
                raise ValueError(f"eval_metric {name!r} is not supported by dartboost.dask: "
                                 "it is not a mean over rows, so it cannot be computed "
                                 "partition by partition; use one of "
                                 f"{', '.join(MEAN_METRICS)}, rmse.")
        self.fns = fns
        self.with_loss = with_loss

    def scorer(self, est, loss):
        return PartialScores(est, loss, self.fns, self.with_loss)

    def read(self, partials):
        """``(loss or None, [(name, value, higher_is_better)])`` of one set."""
        values = list(combine(partials))
        loss = values.pop(0) if self.with_loss else None
        results = []
        for (metric, post), value in zip(self.metrics, values):
            value = float(post(value)) if post is not None else float(value)
            results.append((metric.name, value, metric.higher_is_better))
        return loss, results


class Evaluation:
    """Eval sets and early stopping of a fit, as the local estimator resolved
    them (:meth:`~dartboost._boosting.BaseBoosting.fit`).

    Parameters
    ----------
    names : list of str
        The eval sets' names (their partitions are in :class:`DaskFit`).
    metrics : list
        The recorded metrics (``_metrics`` of the estimator).
    user_metric : bool
        Whether ``eval_metric`` was given: early stopping then compares its
        first metric, else ``-loss``.
    patience : int or None
        Early stopping's ``n_iter_no_change`` (None: off).
    tol : float
    proto : estimator
        A parameter-only copy of the local estimator (encodes eval targets,
        formats predictions for the metrics on the workers).
    encoders : list, optional
        Per set, an encoder of its targets instead of the estimator's (the
        ranker's, which takes each partition's queries).
    """

    def __init__(self, names, metrics, user_metric, patience, tol, proto, encoders=None):
        self.names = list(names)
        # each set's target encoder: the estimator's own for eval sets, or
        # the ranker's (the set's query kind, with its partition's queries)
        self.encoders = [EvalTarget(proto, s) if encoders is None or
                         encoders[s] is None else encoders[s] for s in range(len(names))]
        self.user_metric = user_metric
        self.patience = patience
        self.tol = tol
        self.proto = proto
        stopping = patience is not None
        # no eval set: early stopping scores the training data, which is then
        # the one eval set, "training" (as a local fit without
        # validation_fraction)
        self.on_training = stopping and not self.names
        self.plan = ScorePlan(metrics, with_loss=stopping and not user_metric)
        if self.on_training:
            self.train_plan = self.plan
        elif stopping:
            self.train_plan = ScorePlan(metrics[:1] if user_metric else [],
                                        with_loss=not user_metric)
        else:
            self.train_plan = None
        self.last = {}

    def set_names(self):
        return self.names + (["training"] if self.on_training else [])

    def scorers(self, est, loss):
        """``(train scorer or None, eval scorer or None)`` for the workers."""
        return (None if self.train_plan is None else self.train_plan.scorer(self.proto, loss),
                self.plan.scorer(self.proto, loss) if self.names else None)

    def read(self, fit, train_partials, eval_partials):
        """Combine the partitions' partials of every set (kept in ``last``)."""
        self.last = {}
        for s, name in enumerate(self.names):
            self.last[name] = self.plan.read([eval_partials[g]
                                              for g in fit.eval_partitions(s)])
        if self.train_plan is not None:
            self.last[None] = self.train_plan.read(train_partials)
            if self.on_training:
                self.last["training"] = self.last[None]

    def record(self, est):
        """Record every metric of every set of the last :meth:`read` in
        ``evals_result_``; return LightGBM's ``evaluation_result_list``."""
        results = []
        for name in self.set_names():
            record = est.evals_result_.setdefault(name, {})
            for metric_name, value, higher in self.last[name][1]:
                record.setdefault(metric_name, []).append(value)
                results.append((name, metric_name, value, higher))
        return results

    def _signed(self, loss, results):
        if not self.user_metric:
            return -loss
        _, value, higher = results[0]
        return value if higher else -value

    def stopping_scores(self):
        """``(train score, validation score)`` of the last :meth:`read`
        (higher is better), as :class:`~dartboost._boosting._StoppingRule`."""
        es_name = self.set_names()[-1]
        return self._signed(*self.last[None]), self._signed(*self.last[es_name])


class _QueryRows:
    """The query structure of the training rows, standing in for a ranking
    target in :meth:`DartRanker._validation_split` (which only reads it)."""

    def __init__(self, offsets):
        self.offsets = offsets
        self.n_queries = offsets.size - 1

    def take(self, idx):
        return None


def validation_rows(est, n_samples, labels=None, offsets=None):
    """``(train rows, validation rows)``, sorted global indices: the local
    estimator's own ``_validation_split`` run on the row indices (so the
    held-out rows are a local fit's), stratified by the class ``labels`` of a
    classifier, of whole queries (``offsets``) for a ranker."""
    rows = np.arange(n_samples)
    if offsets is not None:
        y = _QueryRows(offsets)
    elif labels is not None:
        y = labels
    else:  # a regressor's split reads no target
        y = np.broadcast_to(np.float64(0.0), (1, n_samples))
    train, _, _, validation, _, _ = est._validation_split(rows, y, None)
    return train, validation


def resolve(local, X, y, eval_set, eval_names, eval_sample_weight, eval_metric, n_samples,
            prepare_X, ranking=None):
    """The eval sets of a Dask fit and how they are scored.

    Parameters
    ----------
    local : the configured local estimator (targets, loss and constraints set)
    X, y : the training collections as given (a set of the same objects is
        named ``"training"``)
    prepare_X : callable
        ``prepare_X(i, X_val) -> (collection, lengths)``: an eval set's X
        encoded like the training X.
    ranking : (query_of, encoder_for, train_kind) or None
        A ranker's: ``query_of(i)`` is eval set ``i``'s ``(kind, collection)``
        (``"group"``/``"qid"``), ``encoder_for(kind)`` the target encoder of
        partitions with such queries, ``train_kind`` the training data's.

    Returns
    -------
    evaluation : :class:`Evaluation` or None
        ``evaluation.held_out``: early stopping on a ``validation_fraction``
        of the training rows, which the fit must hold out.
    sets : list of (parts, row_counts)
    """
    from . import _data
    stop_after = local._patience(n_samples)
    sets = eval_set_list(eval_set)
    if stop_after is None and not sets:
        return None, []
    user_metric = eval_metric if eval_metric is not None else local.eval_metric
    if stop_after is not None and local._objective_is_custom and user_metric is None:
        raise ValueError("Early stopping with a callable objective needs an eval_metric "
                         "(a custom objective has no loss value to score).")
    metrics = local._metrics(user_metric)
    entries = eval_set_entries(sets, X, y, eval_names, eval_sample_weight)
    names = [name for name, *_ in entries]
    parts = []
    for i, (_, X_raw, y_raw, sw) in enumerate(entries):
        X_val, lengths = prepare_X(i, X_raw)
        query = None if ranking is None else ranking[0](i)
        try:
            set_parts, rows, n_features, _ = _data.training_partitions(
                X_val, y_raw, sw, query, lengths=lengths)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"eval_set[{i}]: {exc}") from None
        if n_features != local.n_features_in_:
            raise ValueError(f"eval_set[{i}] has {n_features} features, but the training X "
                             f"has {local.n_features_in_}.")
        parts.append((set_parts, rows))
    held_out = stop_after is not None and not sets and local.validation_fraction is not None
    if held_out:  # the fit holds out the rows (DaskFit.hold_out)
        names = ["validation"]
    if len(set(names)) != len(names):
        raise ValueError(f"eval set names must be unique, got {names}; pass eval_names.")
    proto = type(local)(**{**local.get_params(deep=False), "callbacks": None})
    for name, value in vars(local).items():
        if name not in proto.get_params(deep=False) and name != "booster_":
            setattr(proto, name, value)
    encoders = None
    if ranking is not None:
        kinds = [ranking[2]] if held_out else [ranking[0](i)[0] for i in range(len(sets))]
        encoders = [ranking[1](kind) for kind in kinds]
    evaluation = Evaluation(names, metrics, user_metric is not None, stop_after, local.tol,
                            proto, encoders)
    evaluation.held_out = held_out
    return evaluation, parts

"""Equal-cost backup models: the baseline (and alternative) to a parity model.

A parity model answers one query per group of k, so r parity models cost
``r * size(parity) / k`` per query. A *backup* runs on every query; sized to
``1/k`` of that, it costs the same compute and can answer a lost query on its
own, without the other k - 1 outputs of a group. On tabular tasks a backup
trained on the labels is often more accurate than decoding (docs/coded.md,
"Parity or backup?"), so it is a first-class redundancy mode: ``CodedPool(mode=
"backup")`` and ``degraded_mode_report(..., backup=)``.
"""

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.utils import check_random_state

from ._codes import raw_output
from ._parity import _ROUNDS, default_parity_estimator
from ._report import model_size

__all__ = ["equal_cost_backup"]

# The size knob of a classifier trained on labels (the regressor names are in _ROUNDS).
_CLF_ROUNDS = {"DartClassifier": "n_estimators", "GradientBoostingClassifier": "n_estimators",
               "HistGradientBoostingClassifier": "max_iter"}


def _parity_trees_per_query(coded):
    sizes = [model_size(p).get("trees") for p in coded.parity_estimators_]
    if any(s is None for s in sizes):
        return None
    return sum(sizes) / coded.k


def _resize(est, trees_per_query, trees_per_round):
    name = type(est).__name__
    param = _ROUNDS.get(name) or _CLF_ROUNDS.get(name)
    if param is None:
        raise ValueError(
            f"cannot size a {name} backup automatically; pass estimator=<an unfitted model "
            "of the cost you want>.")
    rounds = max(1, int(round(trees_per_query / max(trees_per_round, 1))))
    return est.set_params(**{param: rounds})


def equal_cost_backup(coded, X, y=None, *, estimator=None, random_state=None):
    """A backup model with the compute per query of ``coded``'s parity models.

    Parameters
    ----------
    coded : fitted CodedPredictor
        Its parity models set the budget: a backup gets ``1/k`` of their total
        trees, since it runs on every query and they on one per group.
    X : array-like of shape (n_samples, n_features)
        Training queries.
    y : array-like of shape (n_samples,), default=None
        Labels/targets: the backup is the base's own model family trained on
        them. Without ``y`` it is distilled: a regressor of the parity's
        family fitted to the base's raw outputs.
    estimator : unfitted estimator, default=None
        Use this model instead of a resized copy of the base's family (its
        cost is then the caller's choice; the report shows it).
    random_state : int, RandomState or None, default=None

    Returns
    -------
    backup : fitted estimator
        Its :func:`~dartboost.coded.raw_output` lives in the base's raw space,
        so a pool serves its answers like the base's (flagged approximate).
    """
    X = np.asarray(X, dtype=np.float64)
    rng = check_random_state(random_state)
    base = coded.base_estimator
    per_round = int(getattr(base, "n_trees_per_iteration_", 1) or 1)
    budget = _parity_trees_per_query(coded)
    if y is not None:
        if estimator is None:
            if budget is None:
                raise ValueError("the parity models' size is not in trees; pass estimator=.")
            est = _resize(clone(base), budget, per_round)
        else:
            est = clone(estimator)
        target = np.asarray(y)
    else:
        if estimator is None:
            if budget is None:
                raise ValueError("the parity models' size is not in trees; pass estimator=.")
            est = _resize(default_parity_estimator(base), budget, per_round)
        else:
            est = clone(estimator)
        raw = raw_output(base, X)
        target = raw[:, 0] if raw.shape[1] == 1 else raw
    params = est.get_params()
    if "random_state" in params and params["random_state"] is None:
        est.set_params(random_state=rng.randint(np.iinfo(np.int32).max))
    est.fit(X, target)
    if y is not None and is_classifier(base) and list(getattr(est, "classes_", [])) != list(
            base.classes_):
        raise ValueError("the backup saw other classes than the base; train it on the same "
                         "labels.")
    return est

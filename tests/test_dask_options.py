"""Engine options on Dask equal single-machine training: constraints, L1,
class weights, base_score and callable objectives (dartboost.dask)."""
import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from dartboost import DartClassifier, DartRegressor  # noqa: E402
from dartboost.dask import DaskDartClassifier, DaskDartRanker, DaskDartRegressor  # noqa: E402
from dartboost.ranking import DartRanker, make_ranking_data  # noqa: E402
from test_dask_fit import PARAMS, _assert_same_model, _data  # noqa: E402


def _fit_both(dask_cls, local_cls, params, X, y, w=None, chunks=400):
    dX = da.from_array(X, chunks=(chunks, X.shape[1]))
    kwargs = {} if w is None else {"sample_weight": da.from_array(w, chunks=chunks)}
    dist = dask_cls(**params).fit(dX, da.from_array(y, chunks=chunks), **kwargs)
    local = local_cls(**params).fit(X, y, **({} if w is None else {"sample_weight": w}))
    _assert_same_model(dist, local)
    return dist, local, dX


@pytest.mark.parametrize("boosting", ["mart", "dart"])
@pytest.mark.parametrize("option", [
    {"monotonic_cst": [1, 0, -1, 0]},
    {"interaction_cst": [[0, 1], [2, 3]]},
    {"reg_alpha": 2.0},
    {"base_score": 0.75},
])
def test_regressor_option_equals_local(client, boosting, option):
    X, y = _data(1200, seed=10)
    y = y + 0.5 * np.nan_to_num(X[:, 2]) ** 2
    params = dict(PARAMS, boosting=boosting, drop_rate=0.3, skip_drop=0.0, **option)
    dist, local, dX = _fit_both(DaskDartRegressor, DartRegressor, params, X, y)
    np.testing.assert_allclose(dist.predict(dX).compute(), local.predict(X), rtol=0,
                               atol=1e-9)
    if "monotonic_cst" in option:
        # the constraint is honoured: increasing in feature 0 everywhere
        grid = np.tile(np.nanmedian(X, axis=0), (50, 1))
        grid[:, 0] = np.linspace(-3, 3, 50)
        assert np.all(np.diff(dist.predict(grid)) >= -1e-12)


@pytest.mark.parametrize("class_weight,n_classes", [
    ("balanced", 3), ({"a": 3.0, "b": 1.0, "c": 0.5}, 3), ("balanced", 2), ({"a": 0.2}, 2)])
def test_class_weight_equals_local(client, class_weight, n_classes):
    X, y = _data(1200, seed=11)
    # unbalanced classes: "balanced" weights differ from 1
    cuts = [0.15, 0.5] if n_classes == 3 else [0.2]
    labels = np.array(["a", "b", "c"])[np.digitize(y, np.quantile(y, cuts))]
    w = np.random.default_rng(3).uniform(0.5, 2.0, size=len(y))
    params = dict(PARAMS, boosting="dart", skip_drop=0.0, class_weight=class_weight)
    dist, local, dX = _fit_both(DaskDartClassifier, DartClassifier, params, X, labels, w)
    np.testing.assert_allclose(dist.predict_proba(dX).compute(), local.predict_proba(X),
                               rtol=0, atol=1e-9)
    # and the weights matter: unweighted classes give another model
    plain = DartClassifier(**dict(params, class_weight=None)).fit(X, labels, sample_weight=w)
    assert not np.allclose(plain.predict_proba(X), local.predict_proba(X))


def _pseudo_huber(y_true, y_pred):
    # a row-wise objective: each row's gradient depends on its own values only
    r = y_pred - y_true
    scale = np.sqrt(1 + r * r)
    return r / scale, 1 / scale ** 3


def test_callable_objective_runs_on_the_workers(client):
    X, y = _data(1200, seed=12)
    params = dict(PARAMS, boosting="dart", skip_drop=0.0, objective=_pseudo_huber)
    dist, local, dX = _fit_both(DaskDartRegressor, DartRegressor, params, X, y)
    assert dist._objective_is_custom
    np.testing.assert_allclose(dist.predict(dX).compute(), local.predict(X), rtol=0,
                               atol=1e-9)


def test_callable_objective_of_a_classifier_with_weights(client):
    X, y = _data(1000, seed=13)
    labels = (y > np.median(y)).astype(int)
    w = np.random.default_rng(4).uniform(0.5, 2.0, size=len(y))

    def logistic(y_true, y_pred, sample_weight):
        p = 1 / (1 + np.exp(-y_pred))
        return (p - y_true) * sample_weight, p * (1 - p) * sample_weight

    params = dict(PARAMS, objective=logistic)
    _fit_both(DaskDartClassifier, DartClassifier, params, X, labels, w)


def test_ranker_callable_objective_gets_its_partitions_queries(client):
    X, y, qid = make_ranking_data(30, random_state=1)
    sizes = np.diff(np.flatnonzero(np.r_[True, qid[1:] != qid[:-1], True]))
    chunks = tuple(np.diff(np.r_[0, np.cumsum(sizes)[[14, 29]]]).tolist())

    def per_query_centred(y_true, y_pred, sample_weight, group):
        # uses the query structure: a query must arrive whole
        grad = y_pred - y_true
        start = 0
        for size in group:
            grad[start:start + size] -= grad[start:start + size].mean()
            start += size
        return grad, np.ones_like(grad)

    params = dict(PARAMS, min_samples_leaf=5, objective=per_query_centred)
    dist = DaskDartRanker(**params).fit(
        da.from_array(X, chunks=(chunks, X.shape[1])), da.from_array(y, chunks=(chunks,)),
        qid=da.from_array(qid, chunks=(chunks,)))
    local = DartRanker(**params).fit(X, y, qid=qid)
    _assert_same_model(dist, local)


def test_invalid_options_fail_as_locally(client):
    X, y = _data(400, seed=14)
    dX, dy = da.from_array(X, chunks=(200, 4)), da.from_array(y, chunks=200)
    with pytest.raises(ValueError, match="monotonic_cst"):
        DaskDartRegressor(**dict(PARAMS, monotonic_cst=[1, 0])).fit(dX, dy)
    with pytest.raises(ValueError, match="base_score must be finite"):
        DaskDartRegressor(**dict(PARAMS, base_score=np.inf)).fit(dX, dy)
    labels = np.array(["a", "b"])[(y > 0).astype(int)]
    with pytest.raises(ValueError, match="not in class_weight"):
        DaskDartClassifier(**dict(PARAMS, class_weight={"a": 2.0, "zzz": 1.0})).fit(
            dX, da.from_array(labels, chunks=200))
    from dartboost.dask import _worker
    assert sum(client.run(_worker.n_states).values()) == 0

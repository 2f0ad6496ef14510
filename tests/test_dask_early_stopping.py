"""Eval sets and early stopping on Dask equal single-machine training."""
import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from dartboost import DartClassifier, DartRegressor  # noqa: E402
from dartboost.dask import DaskDartClassifier, DaskDartRanker, DaskDartRegressor  # noqa: E402
from dartboost.ranking import DartRanker, make_ranking_data  # noqa: E402
from test_dask_fit import _assert_same_model  # noqa: E402

STOP = dict(n_estimators=200, max_leaf_nodes=15, random_state=0, learning_rate=0.3,
            early_stopping=True, n_iter_no_change=4, validation_fraction=None)


def _data(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    X[rng.random(X.shape) < 0.03] = np.nan
    y = 2 * np.nan_to_num(X[:, 0]) + np.sin(np.nan_to_num(X[:, 1])) + rng.normal(size=n) * 0.5
    return X, y


def _dask(*arrays, chunks):
    return [da.from_array(a, chunks=(chunks,) + a.shape[1:]) for a in arrays]


def _assert_same_run(dist, local):
    _assert_same_model(dist, local)
    assert dist.n_iter_ == local.n_iter_ < STOP["n_estimators"]  # it stopped early
    assert dist.best_iteration_ == local.best_iteration_
    np.testing.assert_allclose(dist.validation_score_, local.validation_score_, rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(dist.train_score_, local.train_score_, rtol=1e-12, atol=1e-14)
    assert dist.evals_result_.keys() == local.evals_result_.keys()
    for name, curves in local.evals_result_.items():
        assert dist.evals_result_[name].keys() == curves.keys()
        for metric, curve in curves.items():
            np.testing.assert_allclose(dist.evals_result_[name][metric], curve, rtol=1e-12)
    assert dist.best_score_.keys() == local.best_score_.keys()


@pytest.mark.parametrize("boosting", ["mart", "dart"])
@pytest.mark.parametrize("metric", [None, ["l1", "rmse"]])
def test_eval_set_early_stopping_equals_local(client, boosting, metric):
    X, y = _data(2000, 0)
    Xv, yv = _data(600, 1)
    wv = np.random.default_rng(2).uniform(0.5, 2.0, size=600)
    params = dict(STOP, boosting=boosting, eval_metric=metric, drop_rate=0.2, skip_drop=0.0)
    dX, dy = _dask(X, y, chunks=700)
    dXv, dyv, dwv = _dask(Xv, yv, wv, chunks=250)
    dist = DaskDartRegressor(**params).fit(dX, dy, eval_set=[(dX, dy), (dXv, dyv)],
                                           eval_sample_weight=[None, dwv])
    local = DartRegressor(**params).fit(X, y, eval_set=[(X, y), (Xv, yv)],
                                        eval_sample_weight=[None, wv])
    assert list(dist.evals_result_) == ["training", "valid_1"]
    _assert_same_run(dist, local)
    np.testing.assert_allclose(dist.predict(Xv), local.predict(Xv), rtol=0, atol=1e-9)


def test_classifier_early_stopping_on_a_metric_with_weights(client):
    X, y = _data(1800, 3)
    labels = np.digitize(y, np.quantile(y, [0.3, 0.7]))
    Xv, yv = _data(500, 4)
    lv = np.digitize(yv, np.quantile(y, [0.3, 0.7]))
    w = np.random.default_rng(5).uniform(0.5, 2.0, size=len(y))
    params = dict(STOP, eval_metric=["multi_error", "multi_logloss"], class_weight="balanced")
    dX, dl, dw = _dask(X, labels, w, chunks=600)
    dXv, dlv = _dask(Xv, lv, chunks=200)
    dist = DaskDartClassifier(**params).fit(dX, dl, sample_weight=dw,
                                            eval_set=(dXv, dlv), eval_names=["held_out"])
    local = DartClassifier(**params).fit(X, labels, sample_weight=w, eval_set=(Xv, lv),
                                         eval_names=["held_out"])
    assert list(dist.evals_result_) == ["held_out"]
    _assert_same_run(dist, local)


def test_stopping_on_the_training_data(client):
    # no eval set and validation_fraction=None: the training data is scored
    X, y = _data(1500, 6)
    params = dict(STOP, learning_rate=0.5, n_iter_no_change=3)
    dist = DaskDartRegressor(**params).fit(*_dask(X, y, chunks=500))
    local = DartRegressor(**params).fit(X, y)
    assert list(dist.evals_result_) == ["training"]
    _assert_same_run(dist, local)


@pytest.mark.parametrize("boosting", ["mart", "dart"])
def test_validation_fraction_holds_out_the_local_rows(client, boosting):
    X, y = _data(1600, 13)
    params = dict(STOP, boosting=boosting, validation_fraction=0.2, skip_drop=0.0)
    dist = DaskDartRegressor(**params).fit(*_dask(X, y, chunks=500))
    local = DartRegressor(**params).fit(X, y)
    assert list(dist.evals_result_) == ["validation"]
    _assert_same_run(dist, local)


def test_stratified_validation_fraction_with_class_weight(client):
    X, y = _data(1500, 14)
    labels = np.array(["a", "b", "c"])[np.digitize(y, np.quantile(y, [0.2, 0.6]))]
    params = dict(STOP, validation_fraction=0.25, class_weight="balanced")
    dist = DaskDartClassifier(**params).fit(*_dask(X, labels, chunks=400))
    local = DartClassifier(**params).fit(X, labels)
    _assert_same_run(dist, local)


def test_auto_early_stopping_follows_the_local_rule(client):
    # early_stopping="auto" is on past 10,000 rows: a validation_fraction split
    X, y = _data(10_200, 15)
    params = dict(n_estimators=200, max_leaf_nodes=7, random_state=0, learning_rate=0.5)
    dist = DaskDartRegressor(**params).fit(*_dask(X, y, chunks=3500))
    local = DartRegressor(**params).fit(X, y)
    assert local.n_iter_ < 200
    _assert_same_run(dist, local)
    small = DaskDartRegressor(**params).fit(*_dask(X[:900], y[:900], chunks=300))
    assert small.n_iter_ == 200 and small.validation_score_ == []


def _queries(n_queries, seed, n_parts):
    """Ranking data cut into ``n_parts`` partitions at query boundaries:
    ``(X, y, qid, sizes, row chunks, queries per partition)``."""
    X, y, qid = make_ranking_data(n_queries, random_state=seed)
    sizes = np.diff(np.flatnonzero(np.r_[True, qid[1:] != qid[:-1], True]))
    per_part = np.diff(np.linspace(0, sizes.size, n_parts + 1).round().astype(int))
    ends = np.cumsum(sizes)[np.cumsum(per_part) - 1]
    return X, y, qid, sizes, tuple(np.diff(np.r_[0, ends]).tolist()), tuple(per_part.tolist())


RANK_STOP = dict(STOP, min_samples_leaf=5, n_iter_no_change=3)


@pytest.mark.parametrize("query_kind", ["qid", "group"])
def test_ranker_eval_set_early_stopping_on_ndcg(client, query_kind):
    X, y, qid, sizes, chunks, per_part = _queries(60, 0, 3)
    Xv, yv, qv, sv, cv, pv = _queries(20, 1, 2)
    params = dict(RANK_STOP, eval_metric=["ndcg@5", "ndcg"])
    dX, dy = da.from_array(X, chunks=(chunks, X.shape[1])), da.from_array(y, chunks=(chunks,))
    dXv = da.from_array(Xv, chunks=(cv, X.shape[1]))
    if query_kind == "qid":
        train_q = {"qid": da.from_array(qid, chunks=(chunks,))}
        eval_q = {"eval_qid": [da.from_array(qv, chunks=(cv,))]}
    else:
        train_q = {"group": da.from_array(sizes, chunks=(per_part,))}
        eval_q = {"eval_group": [da.from_array(sv, chunks=(pv,))]}
    dist = DaskDartRanker(**params).fit(dX, dy, **train_q, eval_set=[
        (dXv, da.from_array(yv, chunks=(cv,)))], **eval_q)
    local = DartRanker(**params).fit(X, y, qid=qid, eval_set=[(Xv, yv)], eval_qid=[qv])
    _assert_same_run(dist, local)


@pytest.mark.parametrize("query_kind", ["qid", "group"])
def test_ranker_validation_fraction_holds_out_whole_queries(client, query_kind):
    X, y, qid, sizes, chunks, per_part = _queries(60, 2, 3)
    params = dict(RANK_STOP, validation_fraction=0.3)
    train_q = ({"qid": da.from_array(qid, chunks=(chunks,))} if query_kind == "qid" else
               {"group": da.from_array(sizes, chunks=(per_part,))})
    dist = DaskDartRanker(**params).fit(da.from_array(X, chunks=(chunks, X.shape[1])),
                                        da.from_array(y, chunks=(chunks,)), **train_q)
    local = DartRanker(**params).fit(X, y, qid=qid)
    assert list(dist.evals_result_) == ["validation"]
    _assert_same_run(dist, local)


def test_eval_set_without_early_stopping_records_metrics(client):
    X, y = _data(900, 7)
    Xv, yv = _data(300, 8)
    params = dict(n_estimators=5, max_leaf_nodes=8, random_state=0, early_stopping=False)
    dist = DaskDartRegressor(**params).fit(*_dask(X, y, chunks=300),
                                           eval_set=[tuple(_dask(Xv, yv, chunks=100))])
    local = DartRegressor(**params).fit(X, y, eval_set=[(Xv, yv)])
    assert dist.n_iter_ == 5 and len(dist.evals_result_["valid_0"]["l2"]) == 5
    np.testing.assert_allclose(dist.evals_result_["valid_0"]["l2"],
                               local.evals_result_["valid_0"]["l2"], rtol=1e-12)
    assert dist.validation_score_ == [] and dist.best_score_.keys() == {"valid_0"}


def test_categorical_eval_set_with_unseen_levels(client):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    rng = np.random.default_rng(9)

    def frame(n, levels):
        df = pd.DataFrame({"x": rng.normal(size=n),
                           "c": pd.Series(rng.choice(levels, n), dtype=object)})
        y = df["x"] + df["c"].map(lambda v: int(v[1:]) % 7 / 3.0) + rng.normal(size=n) * 0.3
        return df, y.to_numpy()

    df, y = frame(1500, [f"l{i}" for i in range(12)])
    dv, yv = frame(400, [f"l{i}" for i in range(15)])  # 3 levels unseen in training
    params = dict(STOP, min_data_per_group=10)
    dist = DaskDartRegressor(**params).fit(
        dd.from_pandas(df, npartitions=3), da.from_array(y, chunks=500),
        eval_set=[(dd.from_pandas(dv, npartitions=2), da.from_array(yv, chunks=200))])
    local = DartRegressor(**params).fit(df, y, eval_set=[(dv, yv)])
    _assert_same_run(dist, local)


def test_a_lost_worker_resumes_with_the_stopping_history(client, tmp_path):
    from dartboost.dask._distributed import WorkerLost
    from dartboost.store import CheckpointCallback, ModelStore

    class LoseOnce:
        done = False

        def on_iteration_end(self, est, t, logs=None):
            if t == 4 and not self.done:
                self.done = True
                raise WorkerLost("simulated")

    X, y = _data(1500, 10)
    Xv, yv = _data(400, 11)
    store = ModelStore([str(tmp_path / f"s{i}") for i in range(3)], k=2, r=1)
    params = dict(STOP, boosting="dart", skip_drop=0.0)
    dist = DaskDartRegressor(**params, callbacks=[CheckpointCallback(store, "run", every=3),
                                                  LoseOnce()])
    dist.fit(*_dask(X, y, chunks=500), eval_set=[tuple(_dask(Xv, yv, chunks=200))])
    assert dist.recoveries_[0]["resumed_at_iteration"] == 3
    _assert_same_run(dist, DartRegressor(**params).fit(X, y, eval_set=[(Xv, yv)]))


def test_unsupported_evaluation_is_a_clear_error(client):
    X, y = _data(600, 12)
    dX, dy = _dask(X, y, chunks=300)
    labels = (y > 0).astype(int)
    dl = da.from_array(labels, chunks=300)
    with pytest.raises(ValueError, match="'auc' is not supported by dartboost.dask"):
        DaskDartClassifier(**dict(STOP, eval_metric="auc")).fit(dX, dl, eval_set=[(dX, dl)])

    def my_metric(y_true, y_pred, w):
        return "m", 0.0, False

    with pytest.raises(ValueError, match="a callable"):
        DaskDartRegressor(**STOP).fit(dX, dy, eval_set=[(dX, dy)], eval_metric=my_metric)
    with pytest.raises(TypeError, match=r"eval_set\[0\].*dask"):
        DaskDartRegressor(**STOP).fit(dX, dy, eval_set=[(X, y)])
    with pytest.raises(ValueError, match=r"eval_set\[0\] has 3 features"):
        DaskDartRegressor(**STOP).fit(dX, dy, eval_set=[(dX[:, :3], dy)])
    with pytest.raises(ValueError, match="callable objective needs an eval_metric"):
        DaskDartRegressor(**dict(STOP, objective=lambda t, p: (p - t, np.ones_like(p)))).fit(
            dX, dy, eval_set=[(dX, dy)])
    with pytest.raises(ValueError, match=r"eval_set\[0\] needs its query structure"):
        DaskDartRanker(**STOP).fit(dX, dy, group=da.from_array(np.array([300, 300]),
                                                               chunks=1),
                                   eval_set=[(dX, dy)])
    from dartboost.dask import _worker
    assert sum(client.run(_worker.n_states).values()) == 0

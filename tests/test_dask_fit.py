"""Distributed training equals single-machine training (dartboost.dask)."""
import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from dartboost import DartClassifier, DartRegressor  # noqa: E402
from dartboost.dask import DaskDartClassifier, DaskDartRegressor  # noqa: E402

PARAMS = dict(n_estimators=6, max_leaf_nodes=8, random_state=0, early_stopping=False)


def _data(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    X[rng.random(X.shape) < 0.05] = np.nan
    y = np.nan_to_num(X[:, 0]) * 2 + np.sin(np.nan_to_num(X[:, 1])) + rng.normal(size=n) * 0.1
    return X, y


def _assert_same_model(dist, local):
    a, b = dist.booster_, local.booster_
    np.testing.assert_array_equal(a.tree_offsets, b.tree_offsets)
    for field in ("feature_idx", "bin_threshold", "missing_go_to_left", "is_leaf", "left"):
        np.testing.assert_array_equal(a.nodes[field], b.nodes[field])
    # leaf values come from histograms summed partition by partition, a
    # different summation order than one local pass: equal to rounding
    np.testing.assert_allclose(a.nodes["value"], b.nodes["value"], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(a.weights, b.weights, rtol=0, atol=1e-15)


@pytest.mark.parametrize("boosting", ["mart", "dart"])
def test_regressor_equals_local(client, boosting):
    X, y = _data()
    # uneven chunks, a small last one: some partitions hold no row of a node
    dX, dy = da.from_array(X, chunks=(400, 4)), da.from_array(y, chunks=400)
    params = dict(PARAMS, boosting=boosting, subsample=0.8, colsample_bytree=0.75,
                  drop_rate=0.3, skip_drop=0.0)
    dist = DaskDartRegressor(**params).fit(dX, dy)
    local = DartRegressor(**params).fit(X, y)
    _assert_same_model(dist, local)
    pred = dist.predict(dX)
    assert isinstance(pred, da.Array)
    np.testing.assert_allclose(pred.compute(), local.predict(X), rtol=0, atol=1e-9)
    plain = dist.to_local()
    assert type(plain) is DartRegressor
    np.testing.assert_allclose(plain.predict(X), local.predict(X), rtol=0, atol=1e-9)


def test_bin_thresholds_agree_past_the_subsample(client, monkeypatch):
    # the binner's row sample is reproduced globally (patched small to stay fast)
    from dartboost.dask import _fit
    from dartboost import _binning
    monkeypatch.setattr(_fit, "BIN_SUBSAMPLE", 300)
    init = _binning.BinMapper.__init__
    monkeypatch.setattr(_binning.BinMapper, "__init__",
                        lambda self, max_bins=255, subsample=300, random_state=None,
                        n_threads=1: init(self, max_bins, subsample, random_state, n_threads))
    X, y = _data(1200, seed=3)
    dist = DaskDartRegressor(**PARAMS).fit(da.from_array(X, chunks=(500, 4)),
                                           da.from_array(y, chunks=500))
    local = DartRegressor(**PARAMS).fit(X, y)
    for a, b in zip(dist.booster_.bin_mapper.bin_thresholds_,
                    local.booster_.bin_mapper.bin_thresholds_):
        np.testing.assert_array_equal(a, b)
    _assert_same_model(dist, local)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_classifier_equals_local(client, n_classes):
    X, y = _data(1200, seed=1)
    labels = np.digitize(y, np.quantile(y, np.linspace(0, 1, n_classes + 1)[1:-1]))
    labels = np.array(["a", "b", "c"])[labels]
    w = np.random.default_rng(2).uniform(0.5, 2.0, size=len(y))
    params = dict(PARAMS, boosting="dart", skip_drop=0.0)
    dist = DaskDartClassifier(**params).fit(da.from_array(X, chunks=(500, 4)),
                                            da.from_array(labels, chunks=500),
                                            sample_weight=da.from_array(w, chunks=500))
    local = DartClassifier(**params).fit(X, labels, sample_weight=w)
    _assert_same_model(dist, local)
    np.testing.assert_array_equal(dist.classes_, local.classes_)
    dX = da.from_array(X, chunks=(500, 4))
    np.testing.assert_allclose(dist.predict_proba(dX).compute(), local.predict_proba(X),
                               rtol=0, atol=1e-9)
    np.testing.assert_array_equal(dist.predict(dX).compute(), local.predict(X))


def test_no_state_left_on_workers(client):
    from dartboost.dask import _worker
    X, y = _data(600)
    DaskDartRegressor(**PARAMS).fit(da.from_array(X, chunks=300), da.from_array(y, chunks=300))
    assert sum(client.run(_worker.n_states).values()) == 0


def test_bad_input(client):
    X, y = _data(600)
    dX = da.from_array(X, chunks=(300, 4))
    est = DaskDartRegressor(**PARAMS)
    with pytest.raises(ValueError, match="partitioned differently"):
        est.fit(dX, da.from_array(y, chunks=200))
    unknown = dX[dX[:, 0] > -10]
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        est.fit(unknown, da.from_array(y, chunks=300))
    with pytest.raises(ValueError, match="empty partitions"):
        est.fit(da.from_array(X, chunks=((300, 0, 300), (4,))),
                da.from_array(y, chunks=((300, 0, 300),)))
    with pytest.raises(TypeError, match="dask.array"):
        est.fit(X, y)
    with pytest.raises(ValueError, match="not supported by distributed"):
        DaskDartRegressor(loss="absolute_error", **PARAMS).fit(dX, da.from_array(y, chunks=300))
    bad = X.copy()
    bad[5, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        est.fit(da.from_array(bad, chunks=(300, 4)), da.from_array(y, chunks=300))
    from dartboost.dask import _worker
    assert sum(client.run(_worker.n_states).values()) == 0


@pytest.mark.parametrize("params", [
    dict(max_leaf_nodes=31, boosting="dart", drop_rate=0.3, skip_drop=0.0),
    dict(max_leaf_nodes=20, max_depth=3, min_samples_leaf=40, colsample_bynode=0.5),
])
def test_speculative_splits_fewer_requests_same_trees(client, monkeypatch, params):
    # histogram requests carry the queued nodes' splits ahead of time: fewer
    # round trips, the same trees as one request per histogram and as local
    from dartboost.dask import _grower, _worker
    X, y = _data(1500, seed=4)
    dX, dy = da.from_array(X, chunks=(400, 4)), da.from_array(y, chunks=400)
    params = dict(PARAMS, **params)
    requests = {}
    calls = []
    real = _worker.histograms

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(_grower, "histograms", counting)
    fits = {}
    for ahead in (0, 3):
        monkeypatch.setattr(_grower, "SPECULATIVE_SPLITS", ahead)
        calls.clear()
        fits[ahead] = DaskDartRegressor(**params).fit(dX, dy)
        requests[ahead] = len(calls)  # one call per worker per request
    local = DartRegressor(**params).fit(X, y)
    _assert_same_model(fits[0], local)
    _assert_same_model(fits[3], local)
    assert requests[3] < 0.8 * requests[0], requests


def test_dataframe_input_equals_local(client):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")  # needs pyarrow
    X, y = _data(1200, seed=5)
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    ddf = dd.from_pandas(df, npartitions=3)
    dy = dd.from_pandas(pd.Series(y, name="y"), npartitions=3)
    dist = DaskDartRegressor(**PARAMS).fit(ddf, dy)
    local = DartRegressor(**PARAMS).fit(df, y)
    _assert_same_model(dist, local)
    np.testing.assert_array_equal(dist.feature_names_in_, ["a", "b", "c", "d"])
    pred = dist.predict(ddf)
    np.testing.assert_allclose(pred.compute(), local.predict(df), rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="partitioned differently"):
        dist.fit(ddf, dd.from_pandas(pd.Series(y), npartitions=2))


def test_category_columns_not_declared_categorical_are_refused(client):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    df = pd.DataFrame({"a": np.arange(40.0), "c": pd.Categorical(["x", "y"] * 20)})
    X = dd.from_pandas(df, npartitions=2)
    y = dd.from_pandas(pd.Series(np.arange(40.0)), npartitions=2)
    with pytest.raises(TypeError, match="not categorical features"):
        DaskDartRegressor(client=client, n_estimators=2, categorical_features=None).fit(X, y)

"""Categorical features on Dask equal single-machine training (dartboost.dask)."""
import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")
dd = pytest.importorskip("dask.dataframe")  # needs pyarrow

import dask  # noqa: E402

from dartboost import DartClassifier, DartRegressor  # noqa: E402
from dartboost.dask import DaskDartClassifier, DaskDartRegressor  # noqa: E402

# few bins and small groups: levels beyond max_bins - 1 are pooled, and
# categorical splits (one-vs-rest and many-vs-many) are frequent
PARAMS = dict(n_estimators=6, max_leaf_nodes=8, random_state=0, early_stopping=False,
              max_bins=16, min_data_per_group=5, cat_smooth=1.0)
LEVELS = [f"lvl{i:02d}" for i in range(40)]


def _frame(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    city = rng.choice(LEVELS, n, p=np.linspace(2, 0.1, len(LEVELS)) / np.linspace(
        2, 0.1, len(LEVELS)).sum())
    df = pd.DataFrame({
        "x": rng.normal(size=n),
        "color": pd.Categorical(rng.choice(["red", "green", "blue", "cyan", "gray"], n),
                                categories=["red", "green", "blue", "cyan", "gray", "pink"]),
        "city": pd.Series(city, dtype=object),
    })
    df.loc[rng.random(n) < 0.05, "city"] = None
    df.loc[rng.random(n) < 0.05, "x"] = np.nan
    effect = {name: np.sin(i) for i, name in enumerate(LEVELS)}
    y = (np.nan_to_num(df["x"].to_numpy()) + df["city"].map(effect).fillna(0).to_numpy()
         + (df["color"] == "blue") * 1.5 + rng.normal(size=n) * 0.1)
    return df, np.asarray(y, dtype=np.float64)


def _assert_same_model(dist, local):
    a, b = dist.booster_, local.booster_
    np.testing.assert_array_equal(a.tree_offsets, b.tree_offsets)
    for field in ("feature_idx", "bin_threshold", "num_threshold", "missing_go_to_left",
                  "is_leaf", "left"):
        np.testing.assert_array_equal(a.nodes[field], b.nodes[field])
    np.testing.assert_allclose(a.nodes["value"], b.nodes["value"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.weights, b.weights, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(a.cat_bitsets, b.cat_bitsets)
    assert a.categorical_split_mask().sum() > 0  # the test exercises set splits
    for ta, tb in zip(a.bin_mapper.bin_thresholds_, b.bin_mapper.bin_thresholds_):
        np.testing.assert_array_equal(ta, tb)
    assert dist._categories == local._categories
    np.testing.assert_array_equal(dist.is_categorical_, local.is_categorical_)


def _new_rows(seed=9):
    # unseen categories, missing labels, a level seen only in the category
    # list ("pink") and the rare, pooled levels
    df, _ = _frame(300, seed=seed)
    df.loc[::7, "city"] = "never-seen"
    df.loc[::11, "color"] = "pink"
    df.loc[::13, "color"] = np.nan
    return df


@pytest.mark.parametrize("boosting", ["mart", "dart"])
def test_categorical_frame_equals_local(client, boosting):
    df, y = _frame()
    ddf = dd.from_pandas(df, npartitions=3)
    dy = dd.from_pandas(pd.Series(y), npartitions=3)
    params = dict(PARAMS, boosting=boosting, drop_rate=0.3, skip_drop=0.0, subsample=0.9)
    dist = DaskDartRegressor(**params).fit(ddf, dy)
    local = DartRegressor(**params).fit(df, y)
    assert len(local._categories[2]) == len(LEVELS)  # more levels than bins: pooled
    _assert_same_model(dist, local)
    new = _new_rows()
    pred = dist.predict(dd.from_pandas(new, npartitions=2))
    assert isinstance(pred, da.Array)
    np.testing.assert_allclose(pred.compute(), local.predict(new), rtol=0, atol=1e-9)
    np.testing.assert_allclose(dist.to_local().predict(new), local.predict(new), rtol=0,
                               atol=1e-9)


def _unknown_categories_frame(parts, like=0):
    """A dask frame whose partitions carry their own category lists (unknown
    categories, as after read_csv(dtype='category')); dtypes of part ``like``."""
    meta = parts[like].iloc[:0].copy()
    meta["color"] = meta["color"].cat.set_categories(["__UNKNOWN_CATEGORIES__"])
    return dd.from_delayed([dask.delayed(p) for p in parts], meta=meta,
                           divisions=[None] * (len(parts) + 1), verify_meta=False)


def test_unknown_categories_are_merged_in_order_of_appearance(client):
    df, y = _frame(1200, seed=2)
    parts = [df.iloc[:500].copy(), df.iloc[500:].copy()]
    parts[0]["color"] = parts[0]["color"].cat.set_categories(["gray", "blue", "red"])
    parts[1]["color"] = parts[1]["color"].astype(str).replace("nan", None).astype(
        pd.CategoricalDtype(["cyan", "green", "red", "blue", "gray"]))
    ddf = _unknown_categories_frame(parts)
    assert not ddf["color"].cat.known
    dy = da.from_array(y, chunks=((500, 700),))
    whole = ddf.compute()  # what a single machine would train on
    assert whole["color"].cat.categories.tolist() == ["gray", "blue", "red", "cyan", "green"]
    params = dict(PARAMS, boosting="dart", skip_drop=0.0, drop_rate=0.3)
    dist = DaskDartRegressor(**params).fit(ddf, dy)
    local = DartRegressor(**params).fit(whole, y)
    assert dist._categories[1] == ["gray", "blue", "red", "cyan", "green"]
    _assert_same_model(dist, local)


def test_categorical_classifier_with_weights_equals_local(client):
    df, y = _frame(1200, seed=3)
    labels = np.array(["lo", "mid", "hi"])[np.digitize(y, np.quantile(y, [0.33, 0.66]))]
    w = np.random.default_rng(4).uniform(0.5, 2.0, size=len(y))
    params = dict(PARAMS, boosting="dart", skip_drop=0.0)
    ddf = dd.from_pandas(df, npartitions=2)
    dist = DaskDartClassifier(**params).fit(ddf, dd.from_pandas(pd.Series(labels),
                                                                npartitions=2),
                                            sample_weight=dd.from_pandas(pd.Series(w),
                                                                         npartitions=2))
    local = DartClassifier(**params).fit(df, labels, sample_weight=w)
    _assert_same_model(dist, local)
    new = _new_rows()
    np.testing.assert_allclose(dist.predict_proba(dd.from_pandas(new, npartitions=2))
                               .compute(), local.predict_proba(new), rtol=0, atol=1e-9)


@pytest.mark.parametrize("spec", [[1], [False, True, False], "names"])
def test_numeric_categorical_features_given_by_index_mask_or_name(client, spec):
    # integer codes used as labels, on a dask array (index/mask) or frame (name)
    df, y = _frame(1000, seed=5)
    codes = df.assign(color=df["color"].cat.codes.astype(np.float64),
                      city=df["city"].map({c: i for i, c in enumerate(LEVELS)}))
    if spec == "names":
        spec = ["color", "city"]
        X_local, X_dist = codes, dd.from_pandas(codes, npartitions=2)
    else:
        X_local = codes.to_numpy()
        X_dist = da.from_array(X_local, chunks=(400, 3))
    params = dict(PARAMS, categorical_features=spec)
    dist = DaskDartRegressor(**params).fit(X_dist, da.from_array(y, chunks=(
        X_dist.chunks[0] if hasattr(X_dist, "chunks") else (500, 500))))
    local = DartRegressor(**params).fit(X_local, y)
    _assert_same_model(dist, local)


def test_resume_after_a_lost_worker_keeps_categorical_trees(client, tmp_path):
    # a fit that loses a worker resumes from its checkpoint: the categorical
    # trees re-registered on the workers score as before (same model)
    from dartboost.dask._distributed import WorkerLost
    from dartboost.store import CheckpointCallback, ModelStore

    class LoseOnce:
        done = False

        def on_iteration_end(self, est, t, logs=None):
            if t == 3 and not self.done:
                self.done = True
                raise WorkerLost("simulated")

    df, y = _frame(900, seed=6)
    store = ModelStore([str(tmp_path / f"s{i}") for i in range(3)], k=2, r=1)
    params = dict(PARAMS, boosting="dart", skip_drop=0.0, drop_rate=0.3)
    est = DaskDartRegressor(**params, callbacks=[CheckpointCallback(store, "run", every=2),
                                                 LoseOnce()])
    est.fit(dd.from_pandas(df, npartitions=2), da.from_array(y, chunks=((450, 450),)))
    assert est.recoveries_[0]["resumed_at_iteration"] == 4
    _assert_same_model(est, DartRegressor(**params).fit(df, y))


def test_inconsistent_partitions_are_clear_errors(client):
    df, y = _frame(600, seed=7)
    dy = da.from_array(y, chunks=((300, 300),))
    est = DaskDartRegressor(**PARAMS)
    # category in one partition, strings in the other
    parts = [df.iloc[:300].copy(), df.iloc[300:].copy()]
    parts[1]["color"] = parts[1]["color"].astype(object)
    with pytest.raises(ValueError, match="'color' is a category column .* partition 1"):
        est.fit(_unknown_categories_frame(parts), dy)
    # a string column that is a category column in one partition
    parts = [df.iloc[:300].copy(), df.iloc[300:].copy()]
    parts[0]["city"] = parts[0]["city"].astype("category")
    with pytest.raises(ValueError, match="'city' is a string/object column .* partition 0"):
        est.fit(_unknown_categories_frame(parts, like=1), dy)
    # known categories that a partition contradicts
    parts = [df.iloc[:300].copy(), df.iloc[300:].copy()]
    parts[1]["color"] = parts[1]["color"].cat.set_categories(["red", "blue"])
    meta = parts[0].iloc[:0]
    bad = dd.from_delayed([dask.delayed(p) for p in parts], meta=meta, verify_meta=False)
    with pytest.raises(ValueError, match="partition 1 of X has categories"):
        est.fit(bad, dy)
    # partitions with other columns
    parts = [df.iloc[:300].copy(), df.iloc[300:].rename(columns={"x": "z"})]
    bad = dd.from_delayed([dask.delayed(p) for p in parts], meta=meta, verify_meta=False)
    with pytest.raises(ValueError, match="partition 1 of X has columns"):
        est.fit(bad, dy)
    # a numeric column holding text in one partition
    parts = [df.iloc[:300].copy(), df.iloc[300:].copy()]
    parts[1]["x"] = parts[1]["x"].astype(object)
    parts[1].iloc[5, 0] = "oops"
    bad = dd.from_delayed([dask.delayed(p) for p in parts], meta=meta, verify_meta=False)
    with pytest.raises(ValueError, match="partition 1 of X has values that are neither"):
        est.fit(bad, dy)
    # a string column that is not categorical
    with pytest.raises(TypeError, match=r"non-numeric columns \['city'\]"):
        DaskDartRegressor(**dict(PARAMS, categorical_features=["color"])).fit(
            dd.from_pandas(df, npartitions=2), dy)
    with pytest.raises(ValueError, match="not a feature name"):
        DaskDartRegressor(**dict(PARAMS, categorical_features=["nope"])).fit(
            dd.from_pandas(df, npartitions=2), dy)
    with pytest.raises(ValueError, match="index 7 outside"):
        DaskDartRegressor(**dict(PARAMS, categorical_features=[7])).fit(
            da.from_array(np.zeros((600, 3)), chunks=300), dy)
    from dartboost.dask import _worker
    assert sum(client.run(_worker.n_states).values()) == 0

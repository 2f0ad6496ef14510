"""Native categorical features: the set-split search (against brute force),
category binning, bitsets at prediction (raw and binned), unseen and missing
categories, pandas/string columns, high cardinality and the model format."""
import itertools

import numpy as np
import pandas as pd
import pytest

from dartboost import DartClassifier, DartRegressor, FormatError
from dartboost._binning import BinMapper
from dartboost._cext import _splitting
from dartboost._common import HISTOGRAM_DTYPE
from dartboost.model_io import estimator_from_state

MISSING = 255
BRUTE = dict(max_cat_to_onehot=1, cat_smooth=0.0, cat_l2=0.0, min_data_per_group=1,
             max_cat_threshold=256)


def _hist(codes, g, h, n_kept):
    """Histogram of one categorical feature: bins 0..n_kept-1 the categories,
    bin n_kept the (empty) pooled bin, bin 255 the missing values."""
    hist = np.zeros((1, MISSING + 1), dtype=HISTOGRAM_DTYPE)
    bins = np.where(codes < 0, MISSING, codes)
    for b in np.unique(bins):
        rows = bins == b
        hist[0, b] = (g[rows].sum(), h[rows].sum(), rows.sum())
    return hist, bins


def _brute_force(bins, g, h, l2, msl, cats, sizes=None):
    """Best left set over every subset of the present categories."""
    G, H, n = g.sum(), h.sum(), g.size
    best = -np.inf, None
    for r in range(1, len(cats)):
        if sizes is not None and r not in sizes:
            continue
        for left in itertools.combinations(cats, r):
            rows = np.isin(bins, left)
            nl = rows.sum()
            if nl < msl or n - nl < msl:
                continue
            gl, hl = g[rows].sum(), h[rows].sum()
            gain = gl * gl / (hl + l2) + (G - gl) ** 2 / (H - hl + l2) - G * G / (H + l2)
            if gain > best[0] + 1e-12:
                best = gain, frozenset(left)
    return best


def _split(hist, g, h, n_kept, l2=0.0, msl=1, **options):
    return _splitting.find_best_split(
        hist, float(g.sum()), float(h.sum()), g.size,
        np.array([n_kept + 1], dtype=np.uint32), np.ones(1, dtype=np.uint8), MISSING, l2, msl,
        1e-3, 0.0, 1, np.ones(1, dtype=np.uint8), **options)


def _left_set(res):
    bits = np.unpackbits(res[7].view(np.uint8), bitorder="little")
    left = set(np.flatnonzero(bits).tolist())
    return frozenset(left | ({MISSING} if res[3] else set()))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("with_missing", [False, True])
def test_many_vs_many_search_finds_the_brute_force_best_partition(seed, with_missing):
    # With cat_smooth = cat_l2 = 0 the sort on sum_g / sum_h makes the best
    # partition a cut of the sorted order (Fisher), so the search is exact.
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 8))
    codes = rng.integers(-1 if with_missing else 0, k, 300)
    g = rng.normal(size=300) + rng.normal(size=k + 1)[codes]
    h = rng.uniform(0.5, 2.0, size=300)
    hist, bins = _hist(codes, g, h, k)
    res = _split(hist, g, h, k, l2=1.0, **BRUTE)
    gain, best_left = _brute_force(bins, g, h, 1.0, 1, sorted(set(bins.tolist())))
    assert res is not None
    assert res[0] == pytest.approx(gain, rel=1e-9)
    left = _left_set(res)
    assert left in (best_left, frozenset(set(bins.tolist())) - best_left)
    rows = np.isin(bins, list(left))
    assert res[6] == rows.sum() and res[4] == pytest.approx(g[rows].sum())


@pytest.mark.parametrize("seed", range(6))
def test_one_vs_rest_below_the_onehot_threshold(seed):
    rng = np.random.default_rng(100 + seed)
    k = int(rng.integers(2, 5))
    codes = rng.integers(-1, k, 200)
    g, h = rng.normal(size=200) + codes, np.ones(200)
    hist, bins = _hist(codes, g, h, k)
    res = _split(hist, g, h, k, max_cat_to_onehot=8)
    cats = sorted(set(bins.tolist()))
    gain, best_left = _brute_force(bins, g, h, 0.0, 1, cats, sizes={1})
    assert res[0] == pytest.approx(gain, rel=1e-9)
    assert _left_set(res) == best_left


def test_pooled_bin_never_goes_left_and_safeguards_hold():
    rng = np.random.default_rng(7)
    k = 10
    codes = rng.integers(0, k + 1, 2000)  # code k: the pooled bin
    g = rng.normal(size=2000) + np.where(codes == k, -50.0, 0.0)
    h = np.ones(2000)
    hist = np.zeros((1, MISSING + 1), dtype=HISTOGRAM_DTYPE)
    for b in range(k + 1):
        rows = codes == b
        hist[0, b] = (g[rows].sum(), h[rows].sum(), rows.sum())
    for max_thr in (1, 3):
        res = _split(hist, g, h, k, max_cat_threshold=max_thr, min_data_per_group=1)
        left = _left_set(res)
        assert k not in left and 0 < len(left) <= max_thr
    # min_data_per_group: the right side keeps at least that many rows
    res = _split(hist, g, h, k, min_data_per_group=1500)
    assert res is None or 2000 - res[6] >= 1500


def test_categorical_partition_follows_the_bitset():
    rng = np.random.default_rng(3)
    binned = np.asfortranarray(rng.integers(0, 20, (5000, 2)).astype(np.uint8))
    binned[::7, 1] = MISSING
    bitset = np.zeros(8, dtype=np.uint32)
    for b in (1, 4, 5, 19):
        bitset[b >> 5] |= np.uint32(1 << (b & 31))
    for missing_left in (False, True):
        rows = np.arange(5000, dtype=np.uint32)
        left_buf, right_buf = np.empty_like(rows), np.empty_like(rows)
        n_left = _splitting.split_indices(binned, rows, 1, 0, missing_left, MISSING, left_buf,
                                          right_buf, 2, bitset)
        col = binned[:, 1]
        goes_left = np.isin(col, [1, 4, 5, 19]) | ((col == MISSING) & missing_left)
        assert n_left == goes_left.sum()
        np.testing.assert_array_equal(rows[:n_left], np.flatnonzero(goes_left))
        np.testing.assert_array_equal(rows[n_left:], np.flatnonzero(~goes_left))


def test_category_binning_keeps_frequent_levels_and_pools_the_rest():
    rng = np.random.default_rng(0)
    col = rng.zipf(1.3, 50_000).astype(np.float64) % 20_000
    col[:100] = np.nan
    X = np.c_[col, rng.normal(size=col.size)]
    mapper = BinMapper(max_bins=255, is_categorical=[True, False], random_state=0).fit(X)
    kept = mapper.bin_thresholds_[0]
    assert kept.size == 254 and np.all(np.diff(kept) > 0)
    values, counts = np.unique(col[~np.isnan(col)], return_counts=True)
    assert set(kept.tolist()) <= set(values.tolist())
    # every kept level is at least as frequent as every pooled one
    freq = dict(zip(values.tolist(), counts.tolist()))
    assert min(freq[v] for v in kept) >= max(c for v, c in freq.items() if v not in set(kept))
    binned = mapper.transform(X)[:, 0]
    pos = np.searchsorted(kept, col)
    found = ~np.isnan(col) & (pos < kept.size) & (kept[np.minimum(pos, kept.size - 1)] == col)
    np.testing.assert_array_equal(binned[found], pos[found])
    assert np.all(binned[~found & ~np.isnan(col)] == kept.size)  # pooled
    assert np.all(binned[np.isnan(col)] == 255)
    with pytest.raises(ValueError, match="infinite"):
        BinMapper(is_categorical=[True]).fit(np.array([[1.0], [np.inf]]))


def _reference_raw(booster, X):
    """Raw scores by a plain-Python walk of every tree (the documented rules:
    a raw category goes left iff it is a kept category whose bin is in the
    split's set; NaN follows missing_go_to_left)."""
    mapper = booster.bin_mapper
    out = np.tile(booster.baseline, (X.shape[0], 1))
    sets = booster.cat_bitsets
    K = booster.n_trees_per_iteration
    for j in range(booster.n_trees):
        nodes, w = booster.tree(j), booster.weights[j // K]
        for i, row in enumerate(X):
            n = 0
            while not nodes["is_leaf"][n]:
                f = nodes["feature_idx"][n]
                x = row[f]
                if np.isnan(x):
                    left = nodes["missing_go_to_left"][n]
                elif mapper.is_categorical_[f]:
                    kept = mapper.bin_thresholds_[f]
                    b = np.searchsorted(kept, x)
                    bits = sets[int(nodes["num_threshold"][n])]
                    left = b < kept.size and kept[b] == x and (bits[b >> 5] >> (b & 31)) & 1
                else:
                    left = x <= nodes["num_threshold"][n]
                n = nodes["left"][n] if left else nodes["right"][n]
            out[i, j % K] += w * nodes["value"][n]
    return out


def _cat_data(n=3000, k=40, seed=0):
    rng = np.random.default_rng(seed)
    c1 = rng.integers(0, k, n).astype(np.float64)
    c2 = rng.integers(0, 6, n).astype(np.float64)
    x = rng.normal(size=n)
    effect = rng.normal(size=k) * 2
    y = effect[c1.astype(int)] + np.where(c2 == 3, 1.5, 0.0) + x + rng.normal(scale=0.2, size=n)
    c1[rng.random(n) < 0.05] = np.nan
    return np.c_[c1, c2, x], y


@pytest.mark.parametrize("boosting", ["dart", "mart"])
def test_raw_prediction_matches_reference_walk_with_unseen_and_missing(boosting):
    X, y = _cat_data()
    est = DartRegressor(boosting=boosting, n_estimators=15, categorical_features=[0, 1],
                        min_data_per_group=20, random_state=0, n_jobs=1).fit(X, y)
    assert est.booster_.cat_bitsets.shape[0] > 0
    X_test = X[:200].copy()
    X_test[:20, 0] = 1000 + np.arange(20)  # unseen categories
    X_test[20:30, 0] = np.nan
    X_test[30:40, 0] = -3.5  # not even an integer: unseen
    np.testing.assert_allclose(est.predict(X_test), _reference_raw(est.booster_, X_test)[:, 0],
                               rtol=1e-12, atol=1e-12)
    # unseen categories go right at every categorical split: as a category
    # that is in no left set
    ref = X_test[:20].copy()
    ref[:, 0] = 1e6
    np.testing.assert_array_equal(est.predict(X_test[:20]), est.predict(ref))


def test_native_categorical_beats_ordinal_codes():
    X, y = _cat_data(n=4000, k=60, seed=1)
    tr, te = slice(0, 3000), slice(3000, None)
    kw = dict(boosting="mart", n_estimators=40, random_state=0, min_data_per_group=20)
    native = DartRegressor(categorical_features=[0, 1], **kw).fit(X[tr], y[tr])
    ordinal = DartRegressor(categorical_features=None, **kw).fit(X[tr], y[tr])
    mse = lambda m: np.mean((m.predict(X[te]) - y[te]) ** 2)  # noqa: E731
    assert mse(native) < mse(ordinal)


def test_training_scores_equal_predictions_dart_staged_and_early_stopping():
    X, y = _cat_data(seed=2)
    est = DartRegressor(n_estimators=30, categorical_features=[0, 1], min_data_per_group=20,
                        drop_rate=0.3, skip_drop=0.0, random_state=0, early_stopping=True,
                        n_iter_no_change=3, validation_fraction=0.2).fit(X, y)
    staged = list(est.staged_predict(X[:300]))
    assert len(staged) == est.n_iter_
    np.testing.assert_allclose(staged[-1], est.predict(X[:300]), rtol=1e-10, atol=1e-10)
    # the fit's binned scores (leaf caches, traversal of binned eval sets)
    # agree with raw prediction: train on X, score X as an eval set
    seen = {}

    class Grab:
        def on_iteration_end(self, e, t, logs):
            seen["raw"] = e._fit_train_raw.copy()

    est2 = DartRegressor(n_estimators=10, categorical_features=[0, 1], min_data_per_group=20,
                         drop_rate=0.3, skip_drop=0.0, random_state=0,
                         callbacks=[Grab()]).fit(X, y)
    np.testing.assert_allclose(seen["raw"][0], est2.predict(X), rtol=1e-10, atol=1e-10)


def test_pandas_category_and_string_columns():
    rng = np.random.default_rng(4)
    n = 2000
    colors = np.array(["red", "green", "blue", "teal", "plum", "gold", "gray"])
    c = rng.integers(0, colors.size, n)
    s = rng.integers(0, 30, n)
    y = np.where(np.isin(c, [1, 4, 5]), 2.0, 0.0) + (s % 3) + rng.normal(scale=0.1, size=n)
    df = pd.DataFrame({"color": pd.Categorical(colors[c]), "city": [f"c{v}" for v in s],
                       "x": rng.normal(size=n)})
    est = DartRegressor(n_estimators=20, min_data_per_group=10, random_state=0).fit(df, y)
    assert est.is_categorical_.tolist() == [True, True, False]
    pred = est.predict(df)
    assert np.mean((pred - y) ** 2) < 0.1
    # another category order, missing and unseen labels, strings as objects
    df2 = df.copy()
    df2["color"] = pd.Categorical(colors[c], categories=colors[::-1])
    np.testing.assert_array_equal(est.predict(df2), pred)
    df3 = df.iloc[:4].copy()
    df3["city"] = ["nowhere", None, "c1", "c2"]
    p3 = est.predict(df3)
    assert np.all(np.isfinite(p3))
    # an unseen label equals a fitted label that no split sends left: the
    # unseen code -1 (documented)
    codes = est._encode_categorical(df3)
    assert codes["city"].iloc[0] == -1.0 and np.isnan(codes["city"].iloc[1])
    # round trip through the model format keeps the categories
    back = estimator_from_state(*est._get_state())
    np.testing.assert_array_equal(back.predict(df), pred)
    np.testing.assert_array_equal(back.predict(df3), p3)
    # by name and by mask
    by_name = DartRegressor(n_estimators=3, categorical_features=["color", "city"],
                            random_state=0).fit(df, y)
    assert by_name.is_categorical_.tolist() == [True, True, False]
    with pytest.raises(ValueError, match="not a feature name"):
        DartRegressor(categorical_features=["nope"]).fit(df, y)
    with pytest.raises(ValueError, match="could not convert|string"):
        DartRegressor(categorical_features=None).fit(df, y)


def test_classifier_with_string_categories():
    rng = np.random.default_rng(5)
    c = rng.integers(0, 12, 1500)
    y = np.where(c % 4 == 0, "a", np.where(c % 4 == 1, "b", "c"))
    df = pd.DataFrame({"c": [f"level{v}" for v in c], "x": rng.normal(size=1500)})
    clf = DartClassifier(n_estimators=10, min_data_per_group=10, random_state=0).fit(df, y)
    assert (clf.predict(df) == y).mean() > 0.95


@pytest.mark.parametrize("n_levels", [1_500, 10_000])
def test_high_cardinality(n_levels):
    rng = np.random.default_rng(n_levels)
    n = 40_000
    c = rng.integers(0, n_levels, n)
    effect = rng.normal(size=n_levels)
    y = effect[c] + rng.normal(scale=0.1, size=n)
    df = pd.DataFrame({"id": pd.Categorical(c, categories=np.arange(n_levels)),
                       "x": rng.normal(size=n)})
    est = DartRegressor(boosting="mart", n_estimators=10, min_data_per_group=5,
                        early_stopping=False, random_state=0).fit(df, y)
    mapper = est.booster_.bin_mapper
    assert mapper.bin_thresholds_[0].size == 254
    assert len(est._categories[0]) == n_levels
    X_codes = est._encode_categorical(df[:300]).to_numpy(dtype=np.float64)
    np.testing.assert_allclose(est.predict(df[:300]), _reference_raw(est.booster_, X_codes)[:, 0],
                               rtol=1e-12, atol=1e-12)
    back = estimator_from_state(*est._get_state())
    np.testing.assert_array_equal(back.predict(df[:500]), est.predict(df[:500]))


def test_model_format_rejects_bad_bitsets():
    X, y = _cat_data(n=1500)
    est = DartRegressor(n_estimators=5, categorical_features=[0, 1], min_data_per_group=20,
                        random_state=0).fit(X, y)
    header, arrays = est._get_state()
    estimator_from_state(header, dict(arrays))  # valid
    bad = dict(arrays, cat_bitsets=arrays["cat_bitsets"][:-3])
    with pytest.raises(FormatError, match="cat_bitsets"):
        estimator_from_state(header, bad)
    words = arrays["cat_bitsets"].copy()
    words[7] |= np.uint32(1 << 31)  # bin 255: beyond any feature's categories
    with pytest.raises(FormatError, match="beyond"):
        estimator_from_state(header, dict(arrays, cat_bitsets=words))
    nodes = arrays["nodes"].copy()
    cat_node = np.flatnonzero((nodes["is_leaf"] == 0) & np.isin(nodes["feature_idx"], [0, 1]))[0]
    nodes["num_threshold"][cat_node] = 1e9
    with pytest.raises(FormatError, match="set index"):
        estimator_from_state(header, dict(arrays, nodes=nodes))
    flags = arrays["is_categorical"].copy()
    flags[0] = 2
    with pytest.raises(FormatError, match="is_categorical"):
        estimator_from_state(header, dict(arrays, is_categorical=flags))
    # a model without categorical arrays (older files) still loads
    plain = DartRegressor(n_estimators=3, random_state=0).fit(X[:, 2:], y)
    h2, a2 = plain._get_state()
    a2 = {k: v for k, v in a2.items() if k not in ("cat_bitsets", "is_categorical")}
    estimator_from_state(h2, a2)


def test_trees_do_not_depend_on_the_thread_count():
    X, y = _cat_data(n=6000)
    states = [DartRegressor(n_estimators=8, categorical_features=[0, 1], min_data_per_group=20,
                            random_state=0, n_jobs=j).fit(X, y)._get_state()[1]
              for j in (1, 2)]
    for name in states[0]:
        np.testing.assert_array_equal(states[0][name], states[1][name])


@pytest.fixture(scope="module")
def cat_model():
    X, y = _cat_data(n=2000, seed=9)
    est = DartRegressor(n_estimators=12, categorical_features=[0, 1], min_data_per_group=20,
                        drop_rate=0.3, skip_drop=0.0, random_state=0).fit(X, y)
    X_test = X[:100].copy()
    X_test[:5, 0] = 999.0  # unseen
    return est, X_test


def test_shap_values_and_interactions_add_up_with_categorical_splits(cat_model):
    from dartboost.explain import shap_interaction_values, shap_values
    est, X = cat_model
    phi = shap_values(est, X)
    np.testing.assert_allclose(phi.sum(axis=1), est.predict(X), rtol=1e-9, atol=1e-9)
    assert np.abs(phi[:, 0]).max() > 0  # the categorical feature gets credit
    inter = shap_interaction_values(est, X[:20])
    np.testing.assert_allclose(inter.sum(axis=2), phi[:20], rtol=1e-8, atol=1e-8)


def test_inspection_and_export_of_categorical_splits(cat_model):
    from dartboost.export import to_onnx
    from dartboost.inspection import dump_model, trees_to_dataframe
    est, X = cat_model
    frame = trees_to_dataframe(est)
    cat_rows = frame[frame["decision_type"] == "=="]
    assert len(cat_rows) and cat_rows["split_feature_index"].isin([0, 1]).all()
    # a list per set split (empty when only missing values go left)
    assert all(isinstance(c, list) for c in cat_rows["categories"])
    dump = dump_model(est)
    assert any(n.get("decision_type") == "==" for t in dump["trees"] for n in t["nodes"])
    with pytest.raises(ValueError, match="set-membership"):
        to_onnx(est)


def test_treelite_export_of_categorical_splits(cat_model):
    treelite = pytest.importorskip("treelite")
    from dartboost.export import to_treelite
    est, X = cat_model
    tl = to_treelite(est)
    pred = treelite.gtil.predict(tl, X).reshape(-1)
    np.testing.assert_allclose(pred, est.predict(X), rtol=1e-9, atol=1e-9)


def test_warm_start_and_eval_sets_with_string_categories():
    rng = np.random.default_rng(11)
    n = 2000
    c = rng.integers(0, 15, n)
    y = (c % 4).astype(float) + rng.normal(scale=0.1, size=n)
    df = pd.DataFrame({"c": [f"k{v}" for v in c], "x": rng.normal(size=n)})
    est = DartRegressor(n_estimators=10, min_data_per_group=10, random_state=0,
                        warm_start=True)
    est.fit(df[:1500], y[:1500], eval_set=[(df[1500:], y[1500:])])
    first = est.predict(df)
    assert len(est.evals_result_["valid_0"]["l2"]) == 10
    est.set_params(n_estimators=20).fit(df[:1500], y[:1500])
    assert est.n_iter_ == 20
    assert np.mean((est.predict(df[1500:]) - y[1500:]) ** 2) < np.mean(
        (first[1500:] - y[1500:]) ** 2)

"""LightGBM's prediction options on every estimator: ``raw_score``,
``iteration_range`` (DART weights replayed exactly), ``pred_leaf``,
``pred_contrib``; scikit-learn's ``apply``; the booster's inspection."""
import json

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

from dartboost import DartClassifier, DartRegressor
from dartboost.ranking import DartRanker, make_ranking_data

DART = dict(n_estimators=12, drop_rate=0.4, skip_drop=0.0, early_stopping=False,
            min_samples_leaf=5, random_state=0, n_jobs=1)


@pytest.fixture(scope="module")
def multiclass():
    X, y = make_classification(500, 6, n_informative=4, n_classes=3, random_state=0)
    return DartClassifier(**DART).fit(X, y), X, y


@pytest.fixture(scope="module")
def binary():
    X, y = make_classification(400, 5, random_state=1)
    return DartClassifier(**DART).fit(X, y), X, y


def test_raw_score(multiclass, binary):
    est, X, _ = multiclass
    np.testing.assert_array_equal(est.predict(X, raw_score=True), est.decision_function(X))
    np.testing.assert_array_equal(est.predict_proba(X, raw_score=True),
                                  est.decision_function(X))
    bin_est, Xb, _ = binary
    assert bin_est.predict(Xb, raw_score=True).shape == (Xb.shape[0],)
    Xr, yr = make_regression(300, 4, random_state=0)
    pois = DartRegressor(loss="poisson", **DART).fit(Xr, np.exp(yr / 100))
    np.testing.assert_allclose(np.exp(pois.predict(Xr, raw_score=True)), pois.predict(Xr),
                               rtol=1e-12)
    with pytest.raises(ValueError, match="exclude each other"):
        est.predict(X, raw_score=True, pred_leaf=True)


def test_iteration_range_replays_dart_weights_in_every_method(multiclass):
    est, X, y = multiclass
    assert est.booster_.weight_log.to_arrays()["log_dropped"].size > 0
    for n in (1, 5, 12):
        short = DartClassifier(**{**DART, "n_estimators": n}).fit(X, y)
        rng = (0, n)
        np.testing.assert_allclose(est.predict_proba(X, iteration_range=rng),
                                   short.predict_proba(X), rtol=1e-12)
        np.testing.assert_allclose(est.decision_function(X, iteration_range=rng),
                                   short.decision_function(X), rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(est.predict(X, iteration_range=rng), short.predict(X))
        np.testing.assert_allclose(est.predict(X, iteration_range=rng, raw_score=True),
                                   short.decision_function(X), rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(est.predict(X, iteration_range=rng, pred_leaf=True),
                                      short.predict(X, pred_leaf=True))
        np.testing.assert_allclose(est.predict(X, iteration_range=rng, pred_contrib=True),
                                   short.predict(X, pred_contrib=True), rtol=1e-9, atol=1e-12)
    only_baseline = est.predict(X, iteration_range=(0, 0), raw_score=True)
    np.testing.assert_allclose(only_baseline, np.tile(est.booster_.baseline, (len(X), 1)))


@pytest.mark.parametrize("bad", [5, (0, 2.5), (0, True), "0:3", (1, 2, 3)])
def test_iteration_range_must_be_a_pair_of_integers(multiclass, bad):
    est, X, _ = multiclass
    with pytest.raises(TypeError, match="iteration_range"):
        est.predict_proba(X, iteration_range=bad)


def test_pred_leaf_numbers_leaves_like_lightgbm(multiclass):
    est, X, _ = multiclass
    leaves = est.predict(X, pred_leaf=True)
    booster = est.booster_
    assert leaves.shape == (X.shape[0], booster.n_trees) and leaves.dtype == np.int32
    nodes = est.predict_leaf(X)
    for j in (0, 13, booster.n_trees - 1):
        leaf_nodes = np.flatnonzero(booster.tree(j)["is_leaf"])
        assert leaves[:, j].max() < leaf_nodes.size
        np.testing.assert_array_equal(leaf_nodes[leaves[:, j]], nodes[:, j])
    part = est.predict(X, pred_leaf=True, iteration_range=(3, 7))
    np.testing.assert_array_equal(part, leaves[:, 3 * 3:7 * 3])
    np.testing.assert_array_equal(est.predict_proba(X, pred_leaf=True), leaves)


def test_apply_has_scikit_learns_shapes(multiclass, binary):
    est, X, y = multiclass
    ref = GradientBoostingClassifier(n_estimators=3, max_depth=2).fit(X, y)
    assert est.apply(X).shape == (X.shape[0], est.n_iter_, 3)
    assert ref.apply(X).ndim == est.apply(X).ndim
    np.testing.assert_array_equal(est.apply(X).reshape(X.shape[0], -1), est.predict_leaf(X))
    bin_est, Xb, yb = binary
    ref_b = GradientBoostingClassifier(n_estimators=3, max_depth=2).fit(Xb, yb)
    assert bin_est.apply(Xb).shape == (Xb.shape[0], bin_est.n_iter_, 1)
    assert ref_b.apply(Xb).shape[2] == 1
    Xr, yr = make_regression(300, 4, random_state=0)
    reg = DartRegressor(**DART).fit(Xr, yr)
    ref_r = GradientBoostingRegressor(n_estimators=3, max_depth=2).fit(Xr, yr)
    assert reg.apply(Xr).shape == (300, reg.n_iter_) and ref_r.apply(Xr).ndim == 2
    Xm, ym = make_regression(300, 4, n_targets=2, random_state=0)
    assert DartRegressor(**DART).fit(Xm, ym).apply(Xm).shape == (300, DART["n_estimators"], 2)
    Xq, yq, qid = make_ranking_data(30, random_state=0)
    rk = DartRanker(**DART).fit(Xq, yq, qid=qid)
    assert rk.apply(Xq).shape == (Xq.shape[0], rk.n_iter_)


def test_pred_contrib_sums_to_the_raw_score(multiclass, binary):
    est, X, _ = multiclass
    M = X.shape[1]
    for rng in (None, (2, 9)):
        contrib = est.predict(X, pred_contrib=True, iteration_range=rng)
        assert contrib.shape == (X.shape[0], 3 * (M + 1))
        sums = contrib.reshape(X.shape[0], 3, M + 1).sum(axis=2)
        np.testing.assert_allclose(sums, est.predict(X, raw_score=True, iteration_range=rng),
                                   rtol=0, atol=1e-9)
    empty = est.predict(X, pred_contrib=True, iteration_range=(4, 4))
    np.testing.assert_allclose(empty.reshape(len(X), 3, M + 1).sum(axis=2),
                               est.predict(X, raw_score=True, iteration_range=(4, 4)))
    bin_est, Xb, _ = binary
    cb = bin_est.predict_proba(Xb, pred_contrib=True)
    assert cb.shape == (Xb.shape[0], Xb.shape[1] + 1)
    np.testing.assert_allclose(cb.sum(axis=1), bin_est.decision_function(Xb), atol=1e-9)
    Xq, yq, qid = make_ranking_data(30, random_state=0)
    rk = DartRanker(**DART).fit(Xq, yq, qid=qid)
    np.testing.assert_allclose(rk.predict(Xq, pred_contrib=True).sum(axis=1), rk.predict(Xq),
                               atol=1e-9)


def test_booster_dump_model_and_trees_to_dataframe(multiclass):
    pytest.importorskip("pandas")
    est, X, _ = multiclass
    booster = est.booster_
    dump = booster.dump_model()
    json.dumps(dump)
    assert dump["estimator"] == "Booster" and len(dump["trees"]) == booster.n_trees
    assert [t["weight"] for t in dump["trees"][::3]] == booster.weights.tolist()
    df = booster.trees_to_dataframe()
    assert df["tree_index"].nunique() == booster.n_trees
    # weighted leaf values of the reached leaves rebuild the raw score
    nodes = est.predict_leaf(X[:20])
    leaves = df.set_index(["tree_index", "node_index"])["weighted_value"]
    raw = np.tile(booster.baseline, (20, 1))
    for j in range(booster.n_trees):
        raw[:, j % 3] += leaves.loc[[(j, int(n)) for n in nodes[:, j]]].to_numpy()
    np.testing.assert_allclose(raw, est.decision_function(X[:20]), rtol=1e-10, atol=1e-12)

"""DartRegressor / DartClassifier behaviour: losses, sklearn tooling, state,
warm start, callbacks and bad input."""
import io
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, make_classification, make_regression
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dartboost import DartClassifier, DartRegressor
from dartboost.callbacks import ProgressBar
from dartboost.model_io import estimator_from_state

FAST = dict(n_estimators=20, early_stopping=False, random_state=0)


@pytest.fixture(scope="module")
def reg_data():
    X, y = make_regression(1500, 8, n_informative=5, noise=10.0, random_state=0)
    return train_test_split(X, y, random_state=0)


@pytest.mark.parametrize("loss", ["squared_error", "absolute_error", "huber", "quantile",
                                  "poisson"])
@pytest.mark.parametrize("boosting", ["dart", "mart"])
def test_regression_losses_learn(loss, boosting, reg_data):
    X_tr, X_te, y_tr, y_te = reg_data
    if loss == "poisson":
        y_tr, y_te = np.exp(y_tr / 200), np.exp(y_te / 200)
    est = DartRegressor(loss=loss, boosting=boosting, quantile=0.5 if loss == "quantile" else None,
                        **FAST).fit(X_tr, y_tr)
    pred = est.predict(X_te)
    base_err = np.mean(np.abs(y_te - np.median(y_tr)))
    assert np.mean(np.abs(y_te - pred)) < 0.7 * base_err
    if loss == "poisson":
        assert np.all(pred > 0)


def test_quantile_loss_coverage(reg_data):
    X_tr, X_te, y_tr, y_te = reg_data
    est = DartRegressor(loss="quantile", quantile=0.9, boosting="mart", n_estimators=60,
                        early_stopping=False, random_state=0).fit(X_tr, y_tr)
    coverage = np.mean(y_tr <= est.predict(X_tr))
    assert 0.82 < coverage < 0.97


def test_multi_output_regression():
    X, y = make_regression(800, 6, n_targets=3, noise=1.0, random_state=0)
    est = DartRegressor(**FAST).fit(X, y)
    pred = est.predict(X)
    assert pred.shape == (800, 3) and est.n_trees_per_iteration_ == 3
    assert est.score(X, y) > 0.7
    with pytest.raises(ValueError, match="Multi-output"):
        DartRegressor(loss="poisson", **FAST).fit(X, np.abs(y))


def test_binary_classifier_string_labels():
    X, y = make_classification(1000, 8, random_state=0)
    labels = np.where(y == 1, "spam", "ham")
    est = DartClassifier(**FAST).fit(X, labels)
    assert est.classes_.tolist() == ["ham", "spam"]
    proba = est.predict_proba(X)
    assert proba.shape == (1000, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert est.decision_function(X).shape == (1000,)
    assert set(est.predict(X)) <= {"ham", "spam"}
    assert est.score(X, labels) > 0.9


def test_multiclass_classifier():
    X, y = make_classification(1200, 10, n_informative=6, n_classes=4, random_state=0)
    est = DartClassifier(**FAST).fit(X, y + 10)
    assert est.decision_function(X).shape == (1200, 4)
    assert est.n_trees_per_iteration_ == 4
    assert est.score(X, y + 10) > 0.8
    assert len(est.booster_.trees) == 4 * est.n_iter_


def test_missing_values_are_used():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3))
    y = (X[:, 0] > 0).astype(int)
    X[y == 1, 1] = np.nan  # missingness itself predicts the label
    X[rng.random(2000) < 0.5, 0] = np.nan
    est = DartClassifier(**FAST).fit(X, y)
    assert est.score(X, y) > 0.97
    assert np.all(np.isfinite(est.predict_proba(X)))


def test_accuracy_parity_with_sklearn_hgb():
    """MART equals sklearn's HistGradientBoosting within noise at equal settings."""
    X, y = make_regression(4000, 10, n_informative=6, noise=20.0, random_state=1)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, random_state=0)
    ours = DartRegressor(boosting="mart", n_estimators=100, early_stopping=False,
                         min_samples_leaf=20).fit(X_tr, y_tr)
    ref = HistGradientBoostingRegressor(max_iter=100, early_stopping=False).fit(X_tr, y_tr)
    rmse = lambda p: np.sqrt(np.mean((p - y_te) ** 2))  # noqa: E731
    assert rmse(ours.predict(X_te)) < 1.03 * rmse(ref.predict(X_te))

    Xc, yc = load_breast_cancer(return_X_y=True)
    Xc_tr, Xc_te, yc_tr, yc_te = train_test_split(Xc, yc, random_state=0, stratify=yc)
    ours = DartClassifier(boosting="mart", n_estimators=100, early_stopping=False).fit(Xc_tr, yc_tr)
    ref = HistGradientBoostingClassifier(max_iter=100, early_stopping=False).fit(Xc_tr, yc_tr)
    auc_ours = roc_auc_score(yc_te, ours.predict_proba(Xc_te)[:, 1])
    auc_ref = roc_auc_score(yc_te, ref.predict_proba(Xc_te)[:, 1])
    assert auc_ours > auc_ref - 0.01


def test_sample_weight_zero_equals_dropping_rows():
    X, y = make_regression(600, 5, random_state=0)
    w = np.ones(600)
    w[::3] = 0
    a = DartRegressor(boosting="mart", max_bins=255, **FAST)
    # thresholds come from unweighted data, so compare weights against a
    # second weighting of the same rows rather than a different data set
    p1 = a.fit(X, y, sample_weight=w).predict(X)
    p2 = clone(a).fit(X, y, sample_weight=2 * w).predict(X)
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(p1, clone(a).fit(X, y).predict(X))


def test_n_jobs_does_not_change_the_model():
    X, y = make_classification(3000, 12, random_state=0)
    p1 = DartClassifier(n_jobs=1, **FAST).fit(X, y).predict_proba(X)
    p2 = DartClassifier(n_jobs=2, **FAST).fit(X, y).predict_proba(X)
    np.testing.assert_allclose(p1, p2, rtol=1e-6)


def test_subsampling_options_and_reproducibility():
    X, y = make_classification(1000, 10, random_state=0)
    params = dict(subsample=0.7, colsample_bytree=0.6, colsample_bynode=0.5, **FAST)
    p1 = DartClassifier(**params).fit(X, y).predict_proba(X)
    p2 = DartClassifier(**params).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)
    assert DartClassifier(**params).fit(X, y).score(X, y) > 0.85


def test_depth_and_leaf_limits():
    X, y = make_regression(1000, 5, random_state=0)
    est = DartRegressor(max_depth=2, max_leaf_nodes=None, **FAST).fit(X, y)
    assert max(t["depth"].max() for t in est.booster_.trees) <= 2
    est = DartRegressor(max_leaf_nodes=5, min_samples_leaf=50, **FAST).fit(X, y)
    for t in est.booster_.trees:
        assert t["is_leaf"].sum() <= 5
        assert t["count"][t["is_leaf"] == 1].min() >= 50


def test_feature_importances_weighted_by_dart_weights():
    X, y = make_regression(800, 6, n_informative=2, random_state=0, shuffle=False)
    est = DartRegressor(**FAST).fit(X, y)
    imp = est.feature_importances_
    assert imp.shape == (6,) and imp.sum() == pytest.approx(1.0)
    assert imp[:2].sum() > 0.8
    manual = np.zeros(6)
    for j, t in enumerate(est.booster_.trees):
        s = t["is_leaf"] == 0
        np.add.at(manual, t["feature_idx"][s], est.tree_weights_[j] * t["gain"][s])
    np.testing.assert_allclose(imp, manual / manual.sum())


def test_sklearn_tooling():
    X, y = make_classification(600, 6, random_state=0)
    pipe = make_pipeline(StandardScaler(), DartClassifier(n_estimators=10, random_state=0))
    grid = GridSearchCV(pipe, {"dartclassifier__boosting": ["dart", "mart"],
                               "dartclassifier__learning_rate": [0.1, 0.3]}, cv=3, n_jobs=2)
    grid.fit(X, y)
    assert grid.best_score_ > 0.8
    scores = cross_val_score(DartRegressor(n_estimators=10), *make_regression(300, 4), cv=3)
    assert scores.shape == (3,)
    est = DartClassifier(n_estimators=10, random_state=0)
    assert clone(est).get_params() == est.get_params()


def test_pickle_and_state_round_trip():
    X, y = make_classification(700, 6, n_classes=3, n_informative=4, random_state=0)
    est = DartClassifier(**FAST).fit(X, y)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))
    header, arrays = est._get_state()
    for arr in arrays.values():
        assert arr.dtype != object
    rebuilt = estimator_from_state(header, arrays)
    np.testing.assert_array_equal(rebuilt.predict_proba(X), est.predict_proba(X))
    assert rebuilt.classes_.tolist() == est.classes_.tolist()
    staged_a = list(est.staged_predict_proba(X[:50]))
    staged_b = list(rebuilt.staged_predict_proba(X[:50]))
    np.testing.assert_array_equal(staged_a[3], staged_b[3])


def test_corrupt_state_is_rejected():
    X, y = make_regression(300, 4, random_state=0)
    header, arrays = DartRegressor(**FAST).fit(X, y)._get_state()
    with pytest.raises(ValueError, match="format_version"):
        estimator_from_state({**header, "format_version": 99}, arrays)
    bad = dict(arrays)
    bad["nodes"] = arrays["nodes"].copy()
    inner = np.flatnonzero(bad["nodes"]["is_leaf"] == 0)[0]
    bad["nodes"]["left"][inner] = 10_000
    with pytest.raises(ValueError, match="corrupt tree"):
        estimator_from_state(header, bad)
    with pytest.raises(ValueError, match="missing arrays"):
        estimator_from_state(header, {k: v for k, v in arrays.items() if k != "baseline"})


@pytest.mark.parametrize("boosting", ["dart", "mart"])
def test_warm_start_equals_a_single_fit(boosting):
    X, y = make_regression(700, 5, noise=3.0, random_state=0)
    params = dict(boosting=boosting, drop_rate=0.3, skip_drop=0.0, early_stopping=False,
                  random_state=11)
    est = DartRegressor(n_estimators=10, warm_start=True, **params).fit(X, y)
    est.set_params(n_estimators=25).fit(X, y)
    full = DartRegressor(n_estimators=25, **params).fit(X, y)
    assert est.n_iter_ == 25
    np.testing.assert_allclose(est.predict(X), full.predict(X), rtol=1e-10)
    with pytest.raises(ValueError, match="n_estimators"):
        est.set_params(n_estimators=5).fit(X, y)


def test_callbacks_and_progress_bar():
    X, y = make_regression(400, 4, random_state=0)
    seen = []

    class StopAt:
        def on_fit_begin(self, est):
            seen.append("begin")

        def on_iteration_end(self, est, iteration, logs):
            seen.append(iteration)
            return iteration == 6

        def on_fit_end(self, est):
            seen.append("end")

    est = DartRegressor(n_estimators=50, callbacks=[StopAt()], **{
        k: v for k, v in FAST.items() if k != "n_estimators"}).fit(X, y)
    assert est.n_iter_ == 7
    assert seen == ["begin", *range(7), "end"]
    buf = io.StringIO()
    bar = ProgressBar(1, stream=buf)
    DartRegressor(n_estimators=5, callbacks=[bar], **{
        k: v for k, v in FAST.items() if k != "n_estimators"}).fit(X, y)
    assert "5/5" in buf.getvalue()


def test_bad_input_errors():
    X, y = make_regression(100, 4, random_state=0)
    est = DartRegressor(n_estimators=3)
    with pytest.raises(NotFittedError):
        est.predict(X)
    y_nan = y.copy()
    y_nan[3] = np.nan
    with pytest.raises(ValueError, match="NaN|infinity"):
        est.fit(X, y_nan)
    y_inf = y.copy()
    y_inf[3] = np.inf
    with pytest.raises(ValueError, match="NaN|infinity"):
        est.fit(X, y_inf)
    with pytest.raises(ValueError, match="non-negative"):
        est.fit(X, y, sample_weight=-np.ones(100))
    with pytest.raises(ValueError, match="float32"):
        est.fit(X, y * 1e200)
    X_inf = X.copy()
    X_inf[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        est.fit(X_inf, y)
    with pytest.raises(ValueError, match="n_estimators"):
        DartRegressor(n_estimators=0).fit(X, y)
    with pytest.raises(ValueError, match="drop_rate"):
        DartRegressor(drop_rate=1.5).fit(X, y)
    with pytest.raises(ValueError, match="boosting"):
        DartRegressor(boosting="goss").fit(X, y)
    with pytest.raises(ValueError, match="max_bins"):
        DartRegressor(max_bins=256).fit(X, y)
    est.fit(X, y)
    with pytest.raises(ValueError, match="features"):
        est.predict(X[:, :3])
    with pytest.raises(ValueError, match="samples"):
        est.fit(X[:5], y[:4])
    with pytest.raises(ValueError, match="quantile"):
        DartRegressor(loss="quantile").fit(X, y)
    with pytest.raises(ValueError, match="poisson"):
        DartRegressor(loss="poisson").fit(X, y - 1000)
    with pytest.raises(ValueError, match="class"):
        DartClassifier(n_estimators=3).fit(X, np.zeros(100))
    with pytest.raises(TypeError, match="eval_set"):
        DartRegressor(n_estimators=3).fit(X, y, eval_set=X)
    clf = DartClassifier(n_estimators=3).fit(X, (y > 0).astype(int))
    with pytest.raises(ValueError, match="not seen"):
        DartClassifier(n_estimators=3).fit(X, (y > 0).astype(int), eval_set=(X, np.full(100, 7)))
    assert clf.predict(X).shape == (100,)

"""The coded predictors as scikit-learn estimators: predict/score, set_params, NaN, Pipelines."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dartboost import DartRegressor
from dartboost.coded import CodedPredictor, LearnedCode, default_parity_estimator


@pytest.fixture(scope="module")
def clf():
    X, y = make_classification(n_samples=300, n_features=5, n_informative=3, random_state=0)
    return X, y, LogisticRegression(max_iter=500).fit(X, y)


def test_predict_is_degraded_mode_and_score_matches(clf):
    X, y, base = clf
    cp = CodedPredictor(base, k=2, parity_estimator=Ridge(), random_state=0).fit(X)
    pred = cp.predict(X[:51])  # odd: the last group is padded
    assert pred.shape == (51,) and set(pred) <= set(base.classes_)
    assert cp.score(X[:51], y[:51]) == pytest.approx(np.mean(pred == y[:51]))
    # Exact parity (linear base, linear parity on the concat code): degraded
    # predictions equal the base's own.
    Xr, yr = make_regression(n_samples=200, n_features=4, random_state=0)
    lin = LinearRegression().fit(Xr, yr)
    cpr = CodedPredictor(lin, k=3, parity_estimator=LinearRegression()).fit(Xr)
    np.testing.assert_allclose(cpr.predict(Xr[:20]), lin.predict(Xr[:20]), atol=1e-6)
    assert cpr.score(Xr, yr) == pytest.approx(lin.score(Xr, yr))


def test_grid_search_needs_no_custom_scorer(clf):
    # Finding: no predict/score, so GridSearchCV needed a custom scorer.
    X, y, base = clf
    cp = CodedPredictor(base, k=2, parity_estimator=Ridge(), random_state=0)
    gs = GridSearchCV(cp, {"parity_estimator__alpha": [0.1, 100.0]}, cv=3).fit(X, y)
    assert gs.best_params_["parity_estimator__alpha"] in (0.1, 100.0)
    assert 0.0 <= gs.best_score_ <= 1.0


def test_set_params_never_mutates_the_shared_base(clf):
    # Finding: clone(cp).set_params(base_estimator__...) changed the deployed base.
    X, y, base = clf
    cp = CodedPredictor(base, k=2, parity_estimator=Ridge()).fit(X)
    c2 = clone(cp)
    with pytest.raises(ValueError, match="deployed"):
        c2.set_params(base_estimator__C=0.001)
    assert base.C == 1.0
    c2.set_params(parity_estimator__alpha=5.0)  # the clone's own parity template
    assert cp.parity_estimator.alpha == 1.0 and base.C == 1.0
    c2.set_params(**c2.get_params(deep=True))  # a no-op round trip is fine


def test_nan_queries_when_the_base_accepts_nan():
    # Finding: NaN queries were rejected although DART handles them.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4))
    y = X[:, 0] + X[:, 1]
    X[rng.random(X.shape) < 0.1] = np.nan
    base = DartRegressor(n_estimators=10, n_jobs=1, random_state=0).fit(X, y)
    cp = CodedPredictor(base, k=2, random_state=0).fit(X)
    pred = cp.predict(X[:10])
    assert np.isfinite(pred).all()
    out, rec = cp.predict_group(X[:10].reshape(2, 5, 4), [True, False, True])
    assert rec.tolist() == [False, True] and np.isfinite(out).all()
    with pytest.raises(ValueError, match="infinity"):
        cp.predict(np.full((2, 4), np.inf))
    lin = LinearRegression().fit(np.nan_to_num(X), y)
    with pytest.raises(ValueError, match="NaN"):
        CodedPredictor(lin, k=2).fit(X)


def test_pipeline_bases_everywhere(clf):
    X, y, _ = clf
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    par = default_parity_estimator(pipe)
    assert type(par).__name__ == "Pipeline" and type(par[-1]).__name__ == "Ridge"
    cp = CodedPredictor(pipe, k=2, random_state=0).fit(X)
    assert cp.score(X, y) > 0.5
    # Finding: LearnedCode refused Pipeline bases.
    pytest.importorskip("torch")
    mlp = make_pipeline(StandardScaler(), MLPClassifier((8,), max_iter=300,
                                                        random_state=0)).fit(X, y)
    lc = LearnedCode(mlp, k=2, epochs=2, random_state=0).fit(X)
    out, rec = lc.predict_group(X[:20].reshape(2, 10, 5), [True, False, True])
    assert rec.tolist() == [False, True] and out.shape == (2, 10)


def test_defaults_follow_the_docs(clf):
    X, y, base = clf
    cp = CodedPredictor(base)
    assert cp.encoder == "concat"
    from dartboost import DartClassifier
    dart = DartClassifier(n_estimators=7, n_jobs=1)
    assert default_parity_estimator(dart).n_estimators == 14


def test_equal_cost_backup_side_by_side():
    # Finding: the library compared codes only with a constant default; a
    # backup of equal compute was never reported beside the parity.
    from dartboost import DartClassifier
    from dartboost.coded import degraded_mode_report, equal_cost_backup

    X, y = make_classification(n_samples=600, n_features=8, n_informative=5, random_state=1)
    base = DartClassifier(n_estimators=20, max_leaf_nodes=8, n_jobs=1,
                          random_state=0).fit(X[:400], y[:400])
    cp = CodedPredictor(base, k=2, random_state=0).fit(X[:400])
    for labels in (y[:400], None):
        bk = equal_cost_backup(cp, X[:400], labels, random_state=0)
        rep = degraded_mode_report(cp, X[400:], y[400:], backup=bk, timing=False)
        cost = rep["cost"]
        # Same trees per query: parity 2 x 20 rounds / k = 20; backup 20.
        assert cost["parity_trees_per_query"] == cost["backup_trees_per_query"] == 20.0
        assert 0.5 <= rep["backup"]["A_d"] <= 1.0
        assert 0.0 <= rep["backup"]["reconstruction_accuracy"] <= 1.0
        assert "A_d" in rep and "overall" in rep["backup"]

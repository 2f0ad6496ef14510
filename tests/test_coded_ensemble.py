"""Tests for ParityEnsemble, TreeRangeShard and degraded_mode_report."""

import json
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.tree import DecisionTreeRegressor

from dartboost.coded import (
    DEFAULT,
    CodedPredictor,
    ParityEnsemble,
    TreeRangeShard,
    UnrecoverableGroupError,
    degraded_mode_report,
)

pytestmark = [pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
              pytest.mark.usefixtures("one_blas_thread")]


@pytest.fixture(scope="module")
def reg_data():
    return make_regression(n_samples=300, n_features=6, noise=5.0, random_state=0)


def _linear_members(X, y, k):
    # Members fitted on different feature subsets: different, but all linear.
    rng = np.random.default_rng(0)
    out = []
    for _ in range(k):
        w = rng.uniform(0.5, 1.5, size=X.shape[0])
        out.append(LinearRegression().fit(X, y, sample_weight=w))
    return out


@pytest.mark.parametrize("r", [1, 2])
def test_parity_ensemble_rebuilds_linear_members_exactly(reg_data, r):
    X, y = reg_data
    members = _linear_members(X, y, 3)
    pe = ParityEnsemble(members, r=r, parity_estimator=LinearRegression()).fit(X)
    full = np.mean([m.predict(X[:40]) for m in members], axis=0)
    avail = np.ones(3 + r, dtype=bool)
    avail[:r] = False
    pred, rec = pe.predict(X[:40], available=avail, return_reconstructed=True)
    np.testing.assert_allclose(pred, full, atol=1e-7)
    assert rec.tolist() == [i < r for i in range(3)]
    np.testing.assert_allclose(pe.predict(X[:40]), full)


def test_tree_range_shards_sum_to_model():
    X, y = make_regression(n_samples=200, n_features=5, random_state=0)
    gb = GradientBoostingRegressor(n_estimators=12, max_depth=2, random_state=0).fit(X, y)
    shards = [TreeRangeShard(gb, 0, 4, include_baseline=True), TreeRangeShard(gb, 4, 9),
              TreeRangeShard(gb, 9)]
    total = sum(s.fit().predict(X) for s in shards)
    np.testing.assert_allclose(total, gb.predict(X), rtol=1e-10, atol=1e-8)
    assert [s.n_trees_ for s in shards] == [4, 5, 3]
    Xc, yc = make_classification(n_samples=200, n_features=5, n_informative=3, n_classes=3,
                                 random_state=0)
    gbc = GradientBoostingClassifier(n_estimators=6, max_depth=2, random_state=0).fit(Xc, yc)
    parts = [TreeRangeShard(gbc, 0, 3, include_baseline=True).fit(), TreeRangeShard(gbc, 3).fit()]
    np.testing.assert_allclose(sum(p.predict(Xc) for p in parts), gbc.decision_function(Xc))
    with pytest.raises(ValueError, match="tree range"):
        TreeRangeShard(gb, 5, 20).fit()
    with pytest.raises(TypeError, match="supports"):
        TreeRangeShard(LinearRegression().fit(X, y)).fit()


def test_sharded_classifier_ensemble_and_report():
    X, y = make_classification(n_samples=600, n_features=8, n_informative=5, random_state=0)
    gb = GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0).fit(X[:400], y[:400])
    shards = [TreeRangeShard(gb, 0, 10, include_baseline=True), TreeRangeShard(gb, 10)]
    pe = ParityEnsemble(shards, combine="sum",
                        parity_estimator=GradientBoostingRegressor(n_estimators=20, max_depth=2,
                                                                   random_state=0)).fit(X[:400])
    np.testing.assert_array_equal(pe.predict(X[400:]), gb.predict(X[400:]))
    backup = GradientBoostingRegressor(n_estimators=10, max_depth=2, random_state=0).fit(
        X[:400], gb.decision_function(X[:400]))
    rep = degraded_mode_report(pe, X[400:], y[400:], backup=backup)
    json.dumps(rep)
    assert set(rep["A_d"]) == {"decoded", "drop_member", "backup"}
    assert rep["A_a"] == pytest.approx(np.mean(gb.predict(X[400:]) == y[400:]))
    # rebuilding the lost shard agrees with the full model more than dropping it
    assert rep["agreement"]["decoded"] > rep["agreement"]["drop_member"]
    assert rep["cost"]["member_sizes"] == [{"trees": 10}, {"trees": 10}]


def test_parity_ensemble_policy_clone_pickle(reg_data):
    X, y = reg_data
    members = _linear_members(X, y, 3)
    pe = ParityEnsemble(members, parity_estimator=Ridge(), on_unrecoverable="raise").fit(X)
    with pytest.raises(UnrecoverableGroupError):
        pe.predict(X[:5], available=[False, False, True, True])
    lenient = clone(pe).set_params(on_unrecoverable="default").fit(X)
    assert lenient.members[0] is members[0]
    out = lenient.member_outputs(X[:5])
    par = np.stack([lenient.parity_predict(X[:5], 0)])
    dec, rec, status = lenient.decode(out, par, [False, False, True, True], return_status=True)
    assert status[:2].tolist() == [DEFAULT, DEFAULT]
    np.testing.assert_allclose(dec[0], np.broadcast_to(lenient.default_outputs_[0], (5, 1)))
    pe2 = pickle.loads(pickle.dumps(lenient))
    np.testing.assert_allclose(pe2.predict(X[:5], [True, False, True, True]),
                               lenient.predict(X[:5], [True, False, True, True]))


def test_parity_ensemble_bad_input(reg_data):
    X, y = reg_data
    members = _linear_members(X, y, 2)
    with pytest.raises(ValueError, match="at least 2"):
        ParityEnsemble(members[:1]).fit(X)
    with pytest.raises(ValueError, match="combine"):
        ParityEnsemble(members, combine="max").fit(X)
    with pytest.raises(NotFittedError):
        ParityEnsemble([LinearRegression(), LinearRegression()]).fit(X)
    Xc, yc = make_classification(n_samples=100, n_features=6, n_classes=3, n_informative=4,
                                 random_state=0)
    mixed = [LinearRegression().fit(Xc, yc), LogisticRegression().fit(Xc, yc)]
    with pytest.raises(ValueError, match="widths"):
        ParityEnsemble(mixed, parity_estimator=Ridge()).fit(Xc)
    pe = ParityEnsemble(members, parity_estimator=Ridge()).fit(X)
    with pytest.raises(ValueError, match="features"):
        pe.predict(X[:, :3])
    with pytest.raises(ValueError, match="shape"):
        pe.predict(X[:3], available=[True, False])


def test_degraded_mode_report_regression_and_classification(reg_data):
    X, y = reg_data
    base = LinearRegression().fit(X, y)
    cp = CodedPredictor(base, k=2, encoder="sum", parity_estimator=LinearRegression()).fit(X)
    rep = degraded_mode_report(cp, X, y, fractions=(0.1,))
    json.dumps(rep)
    assert rep["reconstruction_rmse"] < 1e-6 and rep["reconstruction_r2"] == pytest.approx(1.0)
    assert rep["rmse_degraded"] == pytest.approx(rep["rmse_available"], rel=1e-6)
    assert rep["default_rmse"] > 10 * rep["rmse_available"]
    assert rep["cost"]["parity_to_base_size"] == 1.0
    assert rep["n_groups"] == 150
    # a parity that knows nothing: decoded = constant guess, far worse
    dumb = CodedPredictor(base, k=2, parity_estimator=DecisionTreeRegressor(max_depth=1)).fit(X)
    rep2 = degraded_mode_report(dumb, X, y, timing=False)
    assert rep2["reconstruction_rmse"] > 100 * rep["reconstruction_rmse"]
    assert "base_latency_per_row_s" not in rep2["cost"]
    Xc, yc = make_classification(n_samples=300, n_features=6, n_informative=4, n_classes=3,
                                 random_state=0)
    clf = LogisticRegression(max_iter=500).fit(Xc, yc)
    cpc = CodedPredictor(clf, k=3, parity_estimator=LinearRegression()).fit(Xc)
    rc = degraded_mode_report(cpc, Xc, yc, fractions=(0.0, 1.0))
    assert rc["reconstruction_accuracy"] == 1.0
    assert rc["A_d"] == pytest.approx(rc["A_a"])
    assert rc["overall"]["0.0"] == rc["A_a"] and rc["overall"]["1.0"] == rc["A_d"]
    assert 0.2 < rc["default_accuracy"] < 0.5
    with pytest.raises(ValueError, match="fractions"):
        degraded_mode_report(cpc, Xc, yc, fractions=(1.5,))
    with pytest.raises(ValueError, match="rows"):
        degraded_mode_report(cpc, Xc, yc[:10])
    with pytest.raises(NotFittedError):
        degraded_mode_report(CodedPredictor(clf), Xc, yc)


def test_sum_parity_of_combined_output_is_the_parity_itself(reg_data):
    # With r = 1 and combine="sum", rebuilding one member and re-summing gives
    # exactly the parity member's output: a parity ensemble is then a distilled
    # backup of the whole ensemble, and the report must show them equal.
    X, y = reg_data
    gb = GradientBoostingRegressor(n_estimators=9, max_depth=2, random_state=0).fit(X, y)
    shards = [TreeRangeShard(gb, 0, 3, include_baseline=True), TreeRangeShard(gb, 3, 6),
              TreeRangeShard(gb, 6)]
    par = DecisionTreeRegressor(max_depth=4, random_state=0)
    pe = ParityEnsemble(shards, combine="sum", parity_estimator=par).fit(X)
    for lost in range(3):
        avail = np.ones(4, dtype=bool)
        avail[lost] = False
        np.testing.assert_allclose(pe.predict(X[:50], avail), pe.parity_predict(X[:50], 0)[:, 0])
    backup = clone(par).fit(X, gb.predict(X))
    rep = degraded_mode_report(pe, X, y, backup=backup, timing=False)
    assert rep["rmse_degraded"]["decoded"] == pytest.approx(rep["rmse_degraded"]["backup"])
    assert set(rep["rmse_degraded_worst"]) == {"decoded", "drop_member", "backup"}


def test_report_two_losses_with_r2(reg_data):
    X, y = reg_data
    base = LinearRegression().fit(X, y)
    cp = CodedPredictor(base, k=4, r=2, parity_estimator=LinearRegression()).fit(X)
    rep = degraded_mode_report(cp, X, y, n_lost=2, timing=False)
    assert rep["n_lost"] == 2 and rep["reconstruction_rmse"] < 1e-6
    # three losses exceed r = 2: the default fallback is what gets measured
    rep3 = degraded_mode_report(cp, X, y, n_lost=3, timing=False)
    assert rep3["rmse_degraded"] == pytest.approx(rep3["default_rmse"], rel=0.2)
    with pytest.raises(ValueError, match="n_lost"):
        degraded_mode_report(cp, X, y, n_lost=5)

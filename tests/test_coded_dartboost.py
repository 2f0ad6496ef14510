"""Coded prediction with dartboost estimators as base and parity models."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression

from dartboost.coded import (
    CodedPredictor,
    ParityEnsemble,
    TreeRangeShard,
    default_parity_estimator,
    degraded_mode_report,
    raw_output,
)

estimators = pytest.importorskip("dartboost.estimators")
DartClassifier, DartRegressor = estimators.DartClassifier, estimators.DartRegressor

# n_jobs=1: tiny models, and OpenMP threads only contend on a shared runner.
SMALL = dict(n_estimators=12, max_leaf_nodes=8, min_samples_leaf=5, n_jobs=1, random_state=0)


@pytest.fixture(scope="module")
def multiclass():
    X, y = make_classification(n_samples=500, n_features=8, n_informative=5, n_classes=3,
                               random_state=0)
    return X, y, DartClassifier(**SMALL).fit(X[:350], y[:350])


def test_raw_output_is_decision_function(multiclass):
    X, y, clf = multiclass
    np.testing.assert_array_equal(raw_output(clf, X[:20]), clf.decision_function(X[:20]))
    reg = default_parity_estimator(clf)
    assert isinstance(reg, DartRegressor)
    # twice the base's boosting rounds: a parity's target is harder
    assert reg.n_estimators == 24 and reg.max_leaf_nodes == 8 and reg.boosting == "dart"


def test_dart_parity_multioutput_at_double_budget(multiclass):
    X, y, clf = multiclass
    cp = CodedPredictor(clf, k=2, random_state=0).fit(X[:350])
    par = cp.parity_estimators_[0]
    # multi-output DartRegressor natively: one tree per class per iteration
    assert isinstance(par, DartRegressor) and par.n_trees_per_iteration_ == 3
    rep = degraded_mode_report(cp, X[350:], y[350:], timing=False)
    assert rep["cost"]["parity_to_base_size"] == 2.0
    assert rep["reconstruction_accuracy"] > rep["default_accuracy"] + 0.1
    cp2 = pickle.loads(pickle.dumps(cp))
    Xg = X[350:370].reshape(2, 10, -1)
    np.testing.assert_array_equal(cp2.predict_group(Xg, [False, True, True])[0],
                                  cp.predict_group(Xg, [False, True, True])[0])
    assert clone(cp).base_estimator is clf


def test_dart_regressor_base_and_shards():
    X, y = make_regression(n_samples=300, n_features=5, noise=1.0, random_state=0)
    reg = DartRegressor(**SMALL).fit(X, y)
    shards = [TreeRangeShard(reg, 0, 5, include_baseline=True), TreeRangeShard(reg, 5, 9),
              TreeRangeShard(reg, 9)]
    total = sum(s.fit().predict(X) for s in shards)
    np.testing.assert_allclose(total, reg.predict(X), rtol=1e-9, atol=1e-9)
    pe = ParityEnsemble(shards, combine="sum", random_state=0).fit(X)
    assert isinstance(pe.parity_estimators_[0], DartRegressor)
    pred = pe.predict(X[:30], available=[True, False, True, True])
    assert pred.shape == (30,) and np.all(np.isfinite(pred))


def test_dart_classifier_shards_multiclass(multiclass):
    X, y, clf = multiclass
    shards = [TreeRangeShard(clf, 0, 6, include_baseline=True).fit(), TreeRangeShard(clf, 6).fit()]
    assert shards[0].n_trees_ == 18
    np.testing.assert_allclose(sum(s.predict(X[:40]) for s in shards),
                               clf.decision_function(X[:40]), rtol=1e-9, atol=1e-9)

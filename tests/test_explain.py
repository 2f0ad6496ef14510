"""TreeSHAP (compiled) against brute-force Shapley values, additivity, DART, shap."""
import itertools
import math

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

from dartboost import DartClassifier, DartRegressor
from dartboost._tree_view import ensemble_view
from dartboost.explain import (expected_value, shap_interaction_values, shap_values,
                               to_shap_model)


# ------------------------------------------------------------ brute force
def _cond_expectation(view, x, S):
    """Path-dependent E[f(x) | x_S] per output: follow x on features in S,
    average the children by training cover elsewhere."""
    out = view.baseline.copy()

    def walk(tree, node):
        if tree.left[node] < 0:
            return tree.value[node]
        f = tree.feature[node]
        if f in S:
            v = x[f]
            go_left = tree.missing_left[node] if np.isnan(v) else v <= tree.threshold[node]
            return walk(tree, tree.left[node] if go_left else tree.right[node])
        l, r = tree.left[node], tree.right[node]
        return (tree.cover[l] * walk(tree, l) + tree.cover[r] * walk(tree, r)) / tree.cover[node]

    for tree in view.trees:
        out[tree.output] += tree.weight * walk(tree, 0)
    return out


def _brute_shap(view, x):
    M = view.n_features
    phi = np.zeros((view.n_outputs, M + 1))
    others = range(M)
    for i in range(M):
        rest = [j for j in others if j != i]
        for size in range(M):
            w = math.factorial(size) * math.factorial(M - size - 1) / math.factorial(M)
            for S in itertools.combinations(rest, size):
                S = set(S)
                phi[:, i] += w * (_cond_expectation(view, x, S | {i})
                                  - _cond_expectation(view, x, S))
    phi[:, M] = _cond_expectation(view, x, set())
    return phi


def _brute_interactions(view, x):
    M = view.n_features
    K = view.n_outputs
    phi = np.zeros((K, M + 1, M + 1))
    for i, j in itertools.permutations(range(M), 2):
        rest = [k for k in range(M) if k not in (i, j)]
        for size in range(M - 1):
            w = math.factorial(size) * math.factorial(M - size - 2) / (2 * math.factorial(M - 1))
            for S in itertools.combinations(rest, size):
                S = set(S)
                f = lambda T: _cond_expectation(view, x, T)  # noqa: E731
                phi[:, i, j] += w * (f(S | {i, j}) - f(S | {i}) - f(S | {j}) + f(S))
    main = _brute_shap(view, x)
    for i in range(M):
        phi[:, i, i] = main[:, i] - phi[:, i, :M].sum(axis=1) + phi[:, i, i]
    phi[:, M, M] = main[:, M]
    return phi


def _with_missing(X, rate=0.15, seed=0):
    X = X.copy()
    X[np.random.default_rng(seed).random(X.shape) < rate] = np.nan
    return X


@pytest.fixture(scope="module")
def small_dart_regressor():
    X, y = make_regression(300, 4, noise=5.0, random_state=0)
    X = _with_missing(X)
    est = DartRegressor(n_estimators=12, max_leaf_nodes=6, min_samples_leaf=5, drop_rate=0.5,
                        skip_drop=0.0, random_state=0, early_stopping=False).fit(X, y)
    return est, X


# ------------------------------------------------------------------ tests
def test_matches_brute_force_shapley_values(small_dart_regressor):
    est, X = small_dart_regressor
    view = ensemble_view(est)
    got = shap_values(est, X[:8])
    for i in range(8):
        np.testing.assert_allclose(got[i], _brute_shap(view, X[i])[0], rtol=1e-9, atol=1e-9)


def test_interactions_match_brute_force(small_dart_regressor):
    est, X = small_dart_regressor
    view = ensemble_view(est)
    got = shap_interaction_values(est, X[:5])
    assert got.shape == (5, 5, 5)
    for i in range(5):
        np.testing.assert_allclose(got[i], _brute_interactions(view, X[i])[0], atol=1e-9)
    np.testing.assert_allclose(got.sum(axis=2), shap_values(est, X[:5]), atol=1e-9)
    np.testing.assert_allclose(got[:, :4, :4], np.transpose(got[:, :4, :4], (0, 2, 1)),
                               atol=1e-9)


def test_additivity_with_dart_weights(small_dart_regressor):
    est, X = small_dart_regressor
    # DART really rescaled trees: their weights are not all the learning rate
    assert np.ptp(est.tree_weights_) > 1e-3
    phi = shap_values(est, X)
    assert phi.shape == (X.shape[0], X.shape[1] + 1)
    np.testing.assert_allclose(phi.sum(axis=1), est.predict(X), rtol=0, atol=1e-9)
    np.testing.assert_allclose(phi[:, -1], expected_value(est)[0])


def test_binary_classifier_sums_to_margin():
    X, y = make_classification(400, 6, random_state=1)
    X = _with_missing(X, seed=1)
    est = DartClassifier(n_estimators=20, random_state=0, early_stopping=False).fit(X, y)
    phi = shap_values(est, X)
    assert phi.shape == (400, 7)
    np.testing.assert_allclose(phi.sum(axis=1), est.decision_function(X), atol=1e-9)


def test_multiclass_layout_is_lightgbm_like():
    X, y = make_classification(400, 5, n_informative=4, n_redundant=0, n_classes=3,
                               random_state=2)
    est = DartClassifier(n_estimators=10, max_leaf_nodes=5, random_state=0,
                         early_stopping=False).fit(X, y)
    phi = shap_values(est, X[:50])
    assert phi.shape == (50, 3 * 6)
    margins = est.decision_function(X[:50])
    np.testing.assert_allclose(phi.reshape(50, 3, 6).sum(axis=2), margins, atol=1e-9)
    view = ensemble_view(est)
    np.testing.assert_allclose(phi[3].reshape(3, 6), _brute_shap(view, X[3]), atol=1e-9)
    inter = shap_interaction_values(est, X[:4])
    assert inter.shape == (4, 3, 6, 6)
    np.testing.assert_allclose(inter.sum(axis=3).reshape(4, -1), phi[:4], atol=1e-9)


def test_multi_output_regressor_and_mart():
    X, y = make_regression(200, 3, n_targets=2, random_state=3)
    est = DartRegressor(n_estimators=8, boosting="mart", random_state=0,
                        early_stopping=False).fit(X, y)
    phi = shap_values(est, X).reshape(200, 2, 4)
    np.testing.assert_allclose(phi.sum(axis=2), est.predict(X), atol=1e-9)


def test_bad_input_is_rejected(small_dart_regressor):
    est, X = small_dart_regressor
    with pytest.raises(ValueError, match="4 features"):
        shap_values(est, X[:, :3])
    with pytest.raises(TypeError, match="dartboost estimator"):
        shap_values(object(), X)
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        shap_values(DartRegressor(), X)


def test_threads_do_not_change_the_result(small_dart_regressor):
    est, X = small_dart_regressor
    np.testing.assert_array_equal(shap_values(est, X, n_jobs=1), shap_values(est, X, n_jobs=2))


def test_shap_tree_explainer_accepts_converted_model():
    """The issue: ``shap.TreeExplainer`` raised InvalidModelError on dartboost models."""
    shap = pytest.importorskip("shap")
    X, y = make_classification(300, 5, n_classes=3, n_informative=3, random_state=4)
    X = _with_missing(X, seed=4)
    est = DartClassifier(n_estimators=8, random_state=0, early_stopping=False).fit(X, y)
    explainer = shap.TreeExplainer(to_shap_model(est))
    sv = np.asarray(explainer.shap_values(X[:20], check_additivity=False))
    ours = shap_values(est, X[:20]).reshape(20, 3, 6)
    sv = sv.reshape(20, 5, 3) if sv.shape == (20, 5, 3) else np.moveaxis(sv, 0, -1)
    np.testing.assert_allclose(sv, np.moveaxis(ours[:, :, :5], 1, 2), atol=1e-7)
    np.testing.assert_allclose(explainer.expected_value, expected_value(est), atol=1e-9)


def test_iteration_range_explains_the_model_as_it_was(small_dart_regressor):
    """(0, t): exactly the staged model after t iterations, DART weights of then."""
    est, X = small_dart_regressor
    stages = list(est.staged_predict(X))
    for t in (1, 5, 9):
        phi = shap_values(est, X, iteration_range=(0, t))
        np.testing.assert_allclose(phi.sum(axis=1), stages[t - 1], atol=1e-9)
    # later trees only: baseline + the trees of iterations 4..11, with the final weights
    late_view = ensemble_view(est, iteration_range=(4, 12))
    np.testing.assert_allclose([t.weight for t in late_view.trees], est.tree_weights_[4:])
    late = shap_values(est, X[:3], iteration_range=(4, 12))
    for i in range(3):
        np.testing.assert_allclose(late[i], _brute_shap(late_view, X[i])[0], atol=1e-9)
    with pytest.raises(ValueError, match="iteration_range"):
        shap_values(est, X, iteration_range=(3, 3))
    with pytest.raises(TypeError, match="pair"):
        shap_values(est, X, iteration_range=5)

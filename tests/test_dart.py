"""The DART policy: drop distributions, normalisation, exact score bookkeeping,
early stopping and staged predictions."""
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

from dartboost import DartClassifier, DartRegressor
from dartboost import _scores
from dartboost._dart import DartPolicy, WeightLog


def _draws(policy, weights, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    return [policy.select_dropped(weights, rng) for _ in range(n)]


def test_uniform_drop_rate_and_skip():
    policy = DartPolicy(drop_rate=0.2, skip_drop=0.5, max_drop=0)
    draws = _draws(policy, np.ones(50))
    mean_dropped = np.mean([d.size for d in draws])
    assert mean_dropped == pytest.approx(50 * 0.2 * 0.5, rel=0.05)
    assert all(np.all(np.diff(d) > 0) for d in draws)  # sorted, distinct
    never = DartPolicy(drop_rate=0.9, skip_drop=1.0)
    assert all(d.size == 0 for d in _draws(never, np.ones(20), n=200))


def test_weighted_drops_heavier_trees_more():
    weights = np.r_[np.full(10, 1.0), np.full(10, 0.1)]
    policy = DartPolicy(drop_rate=0.1, skip_drop=0.0, max_drop=0, sample_type="weighted")
    counts = np.zeros(20)
    for d in _draws(policy, weights):
        counts[d] += 1
    assert counts[:10].mean() > 5 * counts[10:].mean()


def test_max_drop_keeps_a_uniform_subset():
    # drop_rate=1 selects everything; max_drop must then keep a subset that is
    # uniform over the trees, not the oldest ones.
    policy = DartPolicy(drop_rate=1.0, skip_drop=0.0, max_drop=5)
    draws = _draws(policy, np.ones(100), n=3000)
    assert all(d.size == 5 for d in draws)
    counts = np.bincount(np.concatenate(draws), minlength=100)
    expected = 3000 * 5 / 100
    assert counts.min() > 0.6 * expected and counts.max() < 1.4 * expected
    assert np.mean(np.concatenate(draws)) == pytest.approx(49.5, abs=2.0)


def test_one_drop_never_returns_empty_unless_skipped():
    policy = DartPolicy(drop_rate=0.001, skip_drop=0.0, one_drop=True)
    assert all(d.size == 1 for d in _draws(policy, np.ones(10), n=500))
    plain = DartPolicy(drop_rate=0.001, skip_drop=0.0, one_drop=False)
    assert sum(d.size == 0 for d in _draws(plain, np.ones(10), n=500)) > 400


@pytest.mark.parametrize("normalize_type", ["tree", "forest"])
def test_normalisation_matches_reference(normalize_type):
    eta = 0.3
    policy = DartPolicy(learning_rate=eta, normalize_type=normalize_type)
    for k in range(0, 6):
        new, scale = policy.normalize(k)
        if k == 0:
            assert (new, scale) == (eta, 1.0)
        elif normalize_type == "tree":
            assert new == pytest.approx(eta / (k + eta)) and scale == pytest.approx(k / (k + eta))
        else:
            assert new == pytest.approx(eta / (1 + eta)) and scale == pytest.approx(1 / (1 + eta))


def _reference_weights(n_iter, seed, policy):
    """Pure-Python DART weight bookkeeping, independent of WeightLog."""
    weights = []
    for t in range(n_iter):
        rng = np.random.default_rng([seed, t])
        dropped = policy.select_dropped(np.array(weights, dtype=float), rng)
        k = len(dropped)
        eta = policy.learning_rate
        if k == 0:
            weights.append(eta)
            continue
        if policy.normalize_type == "tree":
            new, factor = eta / (k + eta), k / (k + eta)
        else:
            new, factor = eta / (1 + eta), 1 / (1 + eta)
        for i in dropped:
            weights[i] *= factor
        weights.append(new)
    return np.array(weights)


@pytest.mark.parametrize("normalize_type", ["tree", "forest"])
def test_model_weights_follow_the_reference(normalize_type):
    X, y = make_regression(300, 5, noise=1.0, random_state=0)
    est = DartRegressor(n_estimators=40, drop_rate=0.3, skip_drop=0.2,
                        normalize_type=normalize_type, random_state=3, early_stopping=False,
                        min_samples_leaf=5).fit(X, y)
    policy = est._dart_policy()
    np.testing.assert_allclose(est.tree_weights_, _reference_weights(40, est._seed, policy),
                               rtol=1e-12)
    np.testing.assert_array_equal(est.tree_weights_, est.booster_.weight_log.replay())


@pytest.mark.parametrize("cache", [True, False])
def test_training_scores_equal_model_predictions_after_100_iterations(cache, monkeypatch):
    if not cache:  # force the traversal fallback
        monkeypatch.setattr(_scores, "LEAF_CACHE_BYTES", 0)
    X, y = make_classification(1500, 8, random_state=0)

    class KeepTrainingScores:  # the scores are visible to callbacks during fit only
        def on_fit_end(self, estimator):
            self.raw = estimator._fit_train_raw.copy()

    cb = KeepTrainingScores()
    est = DartClassifier(n_estimators=100, drop_rate=0.2, skip_drop=0.3, max_leaf_nodes=15,
                         random_state=0, early_stopping=False, callbacks=[cb]).fit(X, y)
    raw = est.decision_function(X)
    np.testing.assert_allclose(cb.raw[0], raw, rtol=1e-9, atol=1e-12)
    assert est._fit_train_raw is None  # the fitted model holds no training scores


def test_cache_and_fallback_give_the_same_model(monkeypatch):
    X, y = make_regression(800, 6, noise=5.0, random_state=0)
    params = dict(n_estimators=30, drop_rate=0.3, skip_drop=0.0, random_state=1,
                  early_stopping=False)
    a = DartRegressor(**params).fit(X, y).predict(X)
    monkeypatch.setattr(_scores, "LEAF_CACHE_BYTES", 0)
    b = DartRegressor(**params).fit(X, y).predict(X)
    np.testing.assert_allclose(a, b, rtol=1e-10)


def test_staged_predict_reproduces_each_iteration():
    X, y = make_regression(500, 5, noise=2.0, random_state=0)
    full = DartRegressor(n_estimators=25, drop_rate=0.3, skip_drop=0.0, random_state=7,
                         early_stopping=False, min_samples_leaf=5).fit(X, y)
    stages = list(full.staged_predict(X))
    assert len(stages) == 25
    np.testing.assert_allclose(stages[-1], full.predict(X), rtol=1e-10)
    for n in (1, 8, 17):
        # iteration t draws from the stream seeded by (seed, t): a shorter fit
        # is exactly the longer one's prefix, with the weights it had then
        short = DartRegressor(n_estimators=n, drop_rate=0.3, skip_drop=0.0, random_state=7,
                              early_stopping=False, min_samples_leaf=5).fit(X, y)
        np.testing.assert_allclose(stages[n - 1], short.predict(X), rtol=1e-10)


def test_staged_predict_proba_multiclass():
    X, y = make_classification(600, 6, n_informative=4, n_classes=3, random_state=0)
    est = DartClassifier(n_estimators=10, random_state=0, early_stopping=False).fit(X, y)
    stages = list(est.staged_predict_proba(X))
    assert len(stages) == 10
    np.testing.assert_allclose(stages[-1], est.predict_proba(X), rtol=1e-10)
    assert list(est.staged_predict(X))[-1].tolist() == est.predict(X).tolist()


@pytest.mark.parametrize("boosting", ["dart", "mart"])
def test_early_stopping_returns_the_best_scored_model(boosting):
    X, y = make_regression(1200, 8, noise=30.0, random_state=0)
    X_val, y_val = X[900:], y[900:]
    est = DartRegressor(boosting=boosting, n_estimators=300, learning_rate=0.3,
                        drop_rate=0.3, skip_drop=0.0, n_iter_no_change=5, random_state=0,
                        min_samples_leaf=5).fit(X[:900], y[:900], eval_set=(X_val, y_val))
    assert est.n_iter_ == est.best_iteration_
    scores = est.validation_score_
    assert len(scores) > est.n_iter_ + 1  # it ran past the best iteration
    assert int(np.argmax(scores)) == est.best_iteration_
    # the returned model is the one that was scored best, with the weights
    # it had then (XGBoost restores the final weights instead)
    best_loss = 0.5 * np.mean((est.predict(X_val) - y_val) ** 2)
    assert -best_loss == pytest.approx(scores[est.best_iteration_], rel=1e-9)
    assert len(est.tree_weights_) == est.n_iter_


def test_early_stopping_with_validation_fraction_classifier():
    X, y = make_classification(3000, 10, random_state=0)
    est = DartClassifier(n_estimators=500, learning_rate=0.5, early_stopping=True,
                         n_iter_no_change=3, random_state=0).fit(X, y)
    assert est.n_iter_ < 500
    assert len(est.validation_score_) >= est.n_iter_ + 1


def test_weight_log_arrays_round_trip():
    log = WeightLog()
    log.append([], 1.0, 0.1)
    log.append([0], 0.5, 0.2)
    log.append([0, 1], 0.25, 0.3)
    again = WeightLog.from_arrays(**log.to_arrays())
    np.testing.assert_array_equal(again.replay(), log.replay())
    np.testing.assert_allclose(log.replay(2), [0.05, 0.2])

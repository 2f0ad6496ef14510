"""The Booster (the scikit-learn-free model), the boosting schemes, and what a
fitted estimator holds: one copy of the trees, no training scores."""
import ast
import inspect
import pickle

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

from dartboost import DartClassifier, DartRegressor, _booster, _boosting, _compat
from dartboost._booster import Booster
from dartboost._dart import DartScheme
from dartboost._mart import MartScheme
from dartboost.coded import TreeRangeShard
from dartboost.store import dumps

DART = dict(n_estimators=30, drop_rate=0.3, skip_drop=0.0, random_state=0,
            early_stopping=False, min_samples_leaf=5, n_jobs=1)


@pytest.fixture(scope="module")
def multiclass():
    X, y = make_classification(600, 6, n_informative=4, n_classes=3, random_state=0)
    return DartClassifier(**DART).fit(X, y), X


def test_booster_module_imports_no_scikit_learn():
    tree = ast.parse(inspect.getsource(_booster))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not any(name.startswith("sklearn") for name in names)


def test_the_loop_has_no_dart_branches():
    loop = inspect.getsource(_boosting.BaseBoosting._run_iterations)
    assert "policy" not in loop and '"dart"' not in loop
    assert DartScheme.keeps_leaf_ids and not MartScheme.keeps_leaf_ids


def test_booster_predicts_like_the_estimator_and_round_trips(multiclass):
    est, X = multiclass
    booster = est.booster_
    assert booster.n_trees_per_iteration == 3 and booster.num_iterations() == 30
    np.testing.assert_array_equal(booster.predict_raw(X), est.decision_function(X))
    header, arrays = booster.to_state()
    again = Booster.from_state({**est._get_state()[0], **header}, arrays)
    np.testing.assert_array_equal(again.predict_raw(X), booster.predict_raw(X))


def test_iteration_range_replays_the_weight_log_exactly():
    X, y = make_regression(400, 5, noise=2.0, random_state=0)
    full = DartRegressor(**DART).fit(X, y)
    assert full.booster_.weight_log.to_arrays()["log_dropped"].size > 0
    for n in (1, 9, 20):
        short = DartRegressor(**{**DART, "n_estimators": n}).fit(X, y)
        # the weights the first n iterations had then, not the final ones
        np.testing.assert_array_equal(full.booster_.weights_at(n), short.tree_weights_)
        np.testing.assert_allclose(full.predict(X, iteration_range=(0, n)), short.predict(X),
                                   rtol=1e-12)
    part = full.predict(X, iteration_range=(5, 30)) - full.predict(X, iteration_range=(5, 5))
    whole = full.predict(X) - full.predict(X, iteration_range=(0, 0))
    first = full.predict(X, iteration_range=(0, 5)) - full.predict(X, iteration_range=(0, 0))
    assert not np.allclose(part + first, whole)  # early trees were rescaled later
    with pytest.raises(ValueError, match="iteration_range"):
        full.predict(X, iteration_range=(0, 31))


def test_staged_predict_is_a_generator_of_one_running_score(multiclass):
    est, X = multiclass
    stages = est.staged_predict_proba(X)
    assert inspect.isgenerator(stages)
    first = next(stages)
    np.testing.assert_allclose(first, est.predict_proba(X, iteration_range=(0, 1)),
                               rtol=1e-10)
    for t, proba in enumerate(stages, start=2):
        if t in (7, 30):
            np.testing.assert_allclose(proba, est.predict_proba(X, iteration_range=(0, t)),
                                       rtol=1e-9, atol=1e-12)


def test_staged_predict_memory_does_not_grow_with_trees(multiclass):
    est, X = multiclass
    import tracemalloc
    Xb = np.repeat(X, 4, axis=0)
    tracemalloc.start()
    for _ in est.staged_decision_function(Xb):
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n_scores = Xb.shape[0] * 3 * 8
    # a few running score arrays, not one per tree (30 iterations x 3 trees)
    assert peak < 8 * n_scores + (1 << 20)


def test_predict_leaf_indexes_leaves(multiclass):
    est, X = multiclass
    leaves = est.predict_leaf(X)
    assert leaves.shape == (X.shape[0], est.booster_.n_trees)
    for j in (0, 17, 89):
        tree = est.booster_.tree(j)
        assert np.all(tree["is_leaf"][leaves[:, j]] == 1)
    values = np.stack([est.booster_.tree(j)["value"][leaves[:, j]]
                       for j in range(est.booster_.n_trees)], axis=1)
    w = np.repeat(est.booster_.weights, 3)
    raw = est.booster_.baseline + np.stack([(values * w)[:, k::3].sum(1) for k in range(3)], 1)
    np.testing.assert_allclose(raw, est.decision_function(X), rtol=1e-10)


def test_fitted_estimator_holds_the_model_only(multiclass):
    est, X = multiclass
    assert not hasattr(est, "_train_raw") and est._fit_train_raw is None
    assert not hasattr(est, "_trees") and not hasattr(est, "_predictor_cache")
    pickled = len(pickle.dumps(est))
    model_file = len(dumps(est)[0])
    assert pickled < 1.25 * model_file + 8192, (pickled, model_file)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))


def test_pickle_size_does_not_grow_with_training_rows():
    X, y = make_regression(4000, 5, random_state=0)
    params = {**DART, "n_estimators": 10, "max_leaf_nodes": 8}
    small = len(pickle.dumps(DartRegressor(**params).fit(X[:400], y[:400])))
    large = len(pickle.dumps(DartRegressor(**params).fit(X, y)))
    assert large < 1.2 * small + 4096


def test_tree_range_shards_hold_only_their_trees(multiclass):
    est, X = multiclass
    shards = [TreeRangeShard(est, 0, 10, include_baseline=True).fit(),
              TreeRangeShard(est, 10, 30).fit()]
    assert sum(s._part.nodes.nbytes for s in shards) == est.booster_.nodes.nbytes
    total = sum(s.predict(X) for s in shards)
    np.testing.assert_allclose(total, est.decision_function(X), rtol=1e-10, atol=1e-12)


def test_shipped_tree_range_shards_cost_one_model(multiclass):
    """k pickled shards (what workers receive) weigh about one model, not k."""
    est, X = multiclass
    bounds = [(0, 10), (10, 20), (20, 30)]
    shards = [TreeRangeShard(est, a, b, include_baseline=a == 0).fit() for a, b in bounds]
    shipped = [pickle.dumps(s) for s in shards]
    assert sum(map(len, shipped)) < 1.3 * len(pickle.dumps(est)) + 8192
    workers = [pickle.loads(b) for b in shipped]
    assert all(w.estimator is None for w in workers)
    total = sum(w.predict(X) for w in workers)
    np.testing.assert_allclose(total, est.decision_function(X), rtol=1e-10, atol=1e-12)


def test_compat_version_range():
    import sklearn
    v = _compat.parse_version(sklearn.__version__)
    assert _compat.SKLEARN_MIN_VERSION <= v
    assert v[:2] <= _compat.SKLEARN_MAX_TESTED_VERSION, "bump the tested range in _compat"
    with pytest.raises(ImportError, match="scikit-learn >= 1.6"):
        _compat.check_sklearn_version("1.5.2")
    _compat.check_sklearn_version("1.10.dev0")
    assert _compat.parse_version("1.10.dev0") == (1, 10)

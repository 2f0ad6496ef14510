"""Plots draw what the model holds (importance, scores, tree, DART weights)."""
import numpy as np
import pytest
from sklearn.datasets import make_regression

from dartboost import DartRegressor
from dartboost._tree_view import ensemble_view

mpl = pytest.importorskip("matplotlib")
mpl.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dartboost.plotting import (feature_importance, plot_importance, plot_metric,  # noqa: E402
                                plot_tree, plot_weight_history)


@pytest.fixture(scope="module")
def model():
    X, y = make_regression(400, 5, n_informative=3, random_state=0)
    X[::9, 0] = np.nan
    est = DartRegressor(n_estimators=15, max_leaf_nodes=5, skip_drop=0.0, drop_rate=0.5,
                        early_stopping=True, n_iter_no_change=100, random_state=0).fit(X, y)
    yield est
    plt.close("all")


def test_importance(model):
    gain = feature_importance(model)
    np.testing.assert_allclose(gain / gain.sum(), model.feature_importances_)
    split = feature_importance(model, "split")
    n_splits = sum(int((~t.is_leaf).sum()) for t in ensemble_view(model).trees)
    assert split.sum() == n_splits
    ax = plot_importance(model, importance_type="split", max_num_features=2)
    assert len(ax.patches) == 2
    assert sorted(p.get_width() for p in ax.patches) == sorted(np.sort(split)[-2:])
    with pytest.raises(ValueError, match="importance_type"):
        feature_importance(model, "cover")


def test_metric_curves(model):
    ax = plot_metric(model)
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    ((name, per_set),) = model.evals_result_.items()
    (metric,) = per_set
    np.testing.assert_allclose(lines[name], per_set[metric])
    assert ax.get_ylabel() == metric
    with pytest.raises(ValueError, match="not recorded"):
        plot_metric(model, "auc")
    unscored = DartRegressor(n_estimators=2, early_stopping=False).fit([[0], [1]] * 5, range(10))
    with pytest.raises(ValueError, match="no scores"):
        plot_metric(unscored)


def test_metric_curves_of_several_eval_sets():
    X, y = make_regression(300, 4, random_state=1)
    est = DartRegressor(n_estimators=6, random_state=0).fit(
        X[:200], y[:200], eval_set=[(X[:200], y[:200]), (X[200:], y[200:])],
        eval_names=["train", "test"], eval_metric=["l1", "l2"])
    ax = plot_metric(est, "l2")
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    assert set(lines) == {"train", "test"}
    np.testing.assert_allclose(lines["test"], est.evals_result_["test"]["l2"])


def test_tree(model):
    ax = plot_tree(model, 3, show_info=("cover", "gain"))
    tree = ensemble_view(model).trees[3]
    texts = [t.get_text() for t in ax.texts if t.get_gid()]
    assert len(texts) == tree.n_nodes
    assert sum(t.startswith("leaf ") for t in texts) == int(tree.is_leaf.sum())
    assert f"count {int(tree.cover[0])}" in texts[0]
    with pytest.raises(IndexError, match="out of range"):
        plot_tree(model, 10_000)


def test_weight_history_replays_the_dart_log(model):
    history = ensemble_view(model).weight_history()
    np.testing.assert_allclose(history[-1], model.tree_weights_)
    ax = plot_weight_history(model, iterations=[0, 4])
    first = ax.get_lines()[0]
    np.testing.assert_allclose(first.get_ydata(), history[:, 0])
    assert len(set(np.round(first.get_ydata(), 12))) > 1  # DART really rescaled it
    with pytest.raises(IndexError):
        plot_weight_history(model, iterations=[99])

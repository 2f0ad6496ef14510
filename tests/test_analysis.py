"""Over-specialisation numbers against a naive per-tree traversal, and the plot."""
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

from dartboost import DartClassifier, DartRegressor
from dartboost.analysis import TreeContributions, plot_tree_contributions, tree_contributions
from dartboost.ranking import DartRanker, make_ranking_data


def _tree_output(nodes, X):
    """Naive traversal of one tree on raw features."""
    out = np.empty(X.shape[0])
    for r, x in enumerate(X):
        node = 0
        while not nodes["is_leaf"][node]:
            v = x[nodes["feature_idx"][node]]
            if np.isnan(v):
                left = nodes["missing_go_to_left"][node]
            else:
                left = v <= nodes["num_threshold"][node]
            node = nodes["left"][node] if left else nodes["right"][node]
        out[r] = nodes["value"][node]
    return out


def _naive(est, X, threshold):
    K = est.n_trees_per_iteration_
    n_iter = est.booster_.num_iterations()
    mean_abs, frac = np.zeros(n_iter), np.zeros(n_iter)
    for t in range(n_iter):
        c = np.stack([est.booster_.weights[t] * _tree_output(est.booster_.tree(t * K + k), X)
                      for k in range(K)])
        mean_abs[t] = np.abs(c).mean()
        frac[t] = np.mean(np.abs(c).max(axis=0) > threshold)
    return mean_abs, frac


@pytest.mark.parametrize("kind", ["regression", "multiclass", "ranking"])
@pytest.mark.parametrize("boosting", ["mart", "dart"])
def test_matches_naive(kind, boosting):
    if kind == "regression":
        X, y = make_regression(400, 6, noise=5.0, random_state=0)
        X[::17, 2] = np.nan
        est = DartRegressor(boosting=boosting, n_estimators=15, random_state=0).fit(X, y)
    elif kind == "multiclass":
        X, y = make_classification(400, 6, n_informative=4, n_classes=3, random_state=0)
        est = DartClassifier(boosting=boosting, n_estimators=10, random_state=0).fit(X, y)
    else:
        X, y, qid = make_ranking_data(30, max_docs=20, n_features=10, random_state=0)
        est = DartRanker(boosting=boosting, n_estimators=10, random_state=0).fit(
            X, y, qid=qid)
    c = tree_contributions(est, X, batch_size=97)  # several batches
    raw = est._raw_predict(X)
    assert c.raw_scale == pytest.approx(np.mean(np.std(raw, axis=1)), rel=1e-9)
    assert c.threshold == pytest.approx(0.01 * c.raw_scale)
    mean_abs, frac = _naive(est, X, c.threshold)
    np.testing.assert_allclose(c.mean_abs, mean_abs, rtol=1e-6)
    np.testing.assert_allclose(c.frac_changed, frac, atol=1.5 / X.shape[0])
    np.testing.assert_array_equal(c.weight, est.tree_weights_)
    assert c.share.sum() == pytest.approx(1.0)
    fixed = tree_contributions(est, X, threshold=0.0)
    assert fixed.threshold == 0.0 and np.all(fixed.frac_changed <= 1)


def test_mart_over_specialises_more_than_dart():
    X, y = make_regression(2000, 10, n_informative=8, noise=10.0, random_state=1)
    kw = dict(n_estimators=60, learning_rate=0.3, random_state=0, early_stopping=False)
    mart = DartRegressor(boosting="mart", **kw).fit(X, y)
    dart = DartRegressor(boosting="dart", drop_rate=0.2, skip_drop=0.0, **kw).fit(X, y)
    cm, cd = tree_contributions(mart, X), tree_contributions(dart, X)
    # MART's late trees carry a much smaller share than DART's
    assert cm.late_share(0.5) < 0.5 * cd.late_share(0.5)
    assert cm.mean_abs[0] > 10 * cm.mean_abs[-10:].mean()


def test_plot(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    X, y = make_regression(300, 5, random_state=0)
    est = DartRegressor(boosting="mart", n_estimators=8).fit(X, y)
    c = tree_contributions(est, X)
    assert isinstance(c, TreeContributions)
    fig, axes = plot_tree_contributions({"MART": c, "again": c}, title="t")
    assert len(axes) == 2 and len(axes[0].lines) == 2 and len(axes[1].lines) == 2
    fig.savefig(tmp_path / "f.png")
    fig2, ax2 = plot_tree_contributions(c, log=False, smooth=3)
    smoothed = ax2[0].lines[0].get_ydata()
    assert smoothed[3] == pytest.approx(c.mean_abs[2:5].mean())
    assert smoothed[0] == pytest.approx(c.mean_abs[:2].mean())
    assert (tmp_path / "f.png").stat().st_size > 1000
    import matplotlib.pyplot as plt
    plt.close(fig)
    plt.close(fig2)


def test_unfitted_and_empty():
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        tree_contributions(DartRegressor(), np.zeros((3, 2)))
    X, y = make_regression(100, 3, random_state=0)
    est = DartRegressor(n_estimators=3).fit(X, y)
    with pytest.raises(ValueError):
        tree_contributions(est, X[:0])

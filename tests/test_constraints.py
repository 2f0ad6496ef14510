"""Monotonic and interaction constraints (verified on every fitted tree), and
L1 regularisation of leaf values (against LightGBM's formula)."""
import numpy as np
import pandas as pd
import pytest

from dartboost import DartClassifier, DartRegressor
from dartboost._grower import TreeGrower
from dartboost._binning import BinMapper
from dartboost.model_io import estimator_from_state


def _data(n=1500, n_features=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    X[rng.random(X.shape) < 0.03] = np.nan
    Xf = np.nan_to_num(X)
    y = (np.sin(2 * Xf[:, 0]) + Xf[:, 1] ** 2 - Xf[:, 2] + Xf[:, 0] * Xf[:, 3]
         + rng.normal(scale=0.3, size=n))
    return X, y


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("boosting", ["dart", "mart"])
def test_predictions_are_monotonic_on_grids(seed, boosting):
    rng = np.random.default_rng(seed)
    X, y = _data(seed=seed)
    cst = rng.integers(-1, 2, X.shape[1])
    cst[seed % X.shape[1]] = 1 if seed % 2 else -1  # at least one constraint
    est = DartRegressor(boosting=boosting, n_estimators=30, monotonic_cst=cst,
                        min_samples_leaf=5, drop_rate=0.3, skip_drop=0.0,
                        random_state=seed).fit(X, y)
    grid = np.linspace(-3.5, 3.5, 60)
    base = X[rng.choice(X.shape[0], 25)]
    for j in np.flatnonzero(cst):
        rows = np.repeat(base, grid.size, axis=0)
        rows[:, j] = np.tile(grid, base.shape[0])
        pred = est.predict(rows).reshape(base.shape[0], grid.size)
        steps = np.diff(pred, axis=1) * cst[j]
        assert steps.min() >= -1e-10, (j, steps.min())
    # and every stage of the model (DART rescales earlier trees)
    j = int(np.flatnonzero(cst)[0])
    rows = np.repeat(base[:5], grid.size, axis=0)
    rows[:, j] = np.tile(grid, 5)
    for stage in est.staged_predict(rows):
        assert (np.diff(stage.reshape(5, -1), axis=1) * cst[j]).min() >= -1e-10


def test_monotonic_classifier_and_dict_by_name_and_round_trip():
    X, y = _data(seed=5)
    df = pd.DataFrame(X, columns=list("abcde"))
    clf = DartClassifier(n_estimators=20, monotonic_cst={"c": -1, "a": 1},
                         random_state=0).fit(df, y > 0)
    grid = np.linspace(-3, 3, 40)
    rows = pd.DataFrame(np.repeat(X[:10], grid.size, axis=0), columns=list("abcde"))
    rows["c"] = np.tile(grid, 10)
    p = clf.predict_proba(rows)[:, 1].reshape(10, -1)
    assert np.diff(p, axis=1).max() <= 1e-12
    back = estimator_from_state(*clf._get_state())
    assert back.monotonic_cst == {"c": -1, "a": 1}
    np.testing.assert_array_equal(back.predict_proba(rows), clf.predict_proba(rows))


def test_monotonic_constraints_bound_refitted_leaves():
    X, y = _data(seed=6)
    est = DartRegressor(loss="absolute_error", n_estimators=20, monotonic_cst=[1, 0, 0, 0, 0],
                        random_state=0).fit(X, y)
    grid = np.linspace(-3, 3, 50)
    rows = np.repeat(X[:10], grid.size, axis=0)
    rows[:, 0] = np.tile(grid, 10)
    assert np.diff(est.predict(rows).reshape(10, -1), axis=1).min() >= -1e-10


def test_monotonic_errors():
    X, y = _data(n=200)
    with pytest.raises(ValueError, match="must be -1, 0 or 1"):
        DartRegressor(monotonic_cst=[2, 0, 0, 0, 0]).fit(X, y)
    with pytest.raises(ValueError, match="shape"):
        DartRegressor(monotonic_cst=[1, 0]).fit(X, y)
    with pytest.raises(ValueError, match="no feature names"):
        DartRegressor(monotonic_cst={"a": 1}).fit(X, y)
    with pytest.raises(ValueError, match="categorical"):
        DartRegressor(monotonic_cst=[1, 0, 0, 0, 0], categorical_features=[0]).fit(
            np.c_[np.round(np.abs(np.nan_to_num(X[:, :1]))), X[:, 1:]], y)
    with pytest.raises(ValueError, match="multiclass"):
        DartClassifier(monotonic_cst=[1, 0, 0, 0, 0]).fit(X, np.arange(200) % 3)


def _paths(nodes):
    """Features on every root-to-leaf path of a tree."""
    out, stack = [], [(0, frozenset())]
    while stack:
        n, used = stack.pop()
        if nodes["is_leaf"][n]:
            out.append(used)
            continue
        used = used | {int(nodes["feature_idx"][n])}
        stack += [(nodes["left"][n], used), (nodes["right"][n], used)]
    return out


@pytest.mark.parametrize("spec,groups", [
    ([[0, 1], [2, 3]], [{0, 1}, {2, 3}, {4}]),
    ("no_interactions", [{0}, {1}, {2}, {3}, {4}]),
    ([{0, 3}, [1, 3, 4]], [{0, 3}, {1, 3, 4}, {2}]),
])
def test_interaction_constraints_hold_on_every_path(spec, groups):
    X, y = _data(n=2000, seed=1)
    est = DartRegressor(n_estimators=25, interaction_cst=spec, min_samples_leaf=5,
                        max_leaf_nodes=16, random_state=0).fit(X, y)
    n_multi = 0
    for tree in est.booster_.trees:
        for used in _paths(tree):
            assert any(used <= g for g in groups), (used, groups)
            n_multi += len(used) > 1
    if spec != "no_interactions":
        assert n_multi > 0  # the constraint allows interactions within a group
    back = estimator_from_state(*est._get_state())
    np.testing.assert_array_equal(back.predict(X), est.predict(X))


def test_interaction_errors():
    X, y = _data(n=200)
    with pytest.raises(ValueError, match="not a feature index"):
        DartRegressor(interaction_cst=[[0, 7]]).fit(X, y)
    with pytest.raises(ValueError, match="'pairwise'"):
        DartRegressor(interaction_cst="all").fit(X, y)


@pytest.mark.parametrize("alpha", [0.0, 3.0, 40.0])
def test_l1_leaf_values_and_gain_follow_the_soft_threshold_formula(alpha):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 4))
    g = (X[:, 0] > 0).astype(np.float32) * 2 - 1 + rng.normal(scale=0.5, size=3000).astype(
        np.float32)
    h = rng.uniform(0.5, 1.5, 3000).astype(np.float32)
    mapper = BinMapper(random_state=0).fit(X)
    l2 = 1.0
    grower = TreeGrower(mapper.transform(X), g, h, mapper.n_bins_non_missing_,
                        mapper.missing_values_bin_idx_, max_leaf_nodes=8, l2_regularization=l2,
                        reg_alpha=alpha, bin_thresholds=mapper.bin_thresholds_)
    nodes, leaves = grower.grow()
    T = lambda s: np.sign(s) * max(abs(s) - alpha, 0.0)  # noqa: E731
    for idx, start, stop in leaves:
        rows = grower.partition[start:stop]
        G, H = g[rows].astype(np.float64).sum(), h[rows].astype(np.float64).sum()
        assert nodes["value"][idx] == pytest.approx(-T(G) / (H + l2), rel=1e-6, abs=1e-9)
    # the root's split gain
    G, H = g.astype(np.float64).sum(), h.astype(np.float64).sum()
    left_rows = np.flatnonzero(mapper.transform(X)[:, nodes["feature_idx"][0]]
                               <= nodes["bin_threshold"][0])
    GL, HL = g[left_rows].astype(np.float64).sum(), h[left_rows].astype(np.float64).sum()
    expected = (T(GL) ** 2 / (HL + l2) + T(G - GL) ** 2 / (H - HL + l2) - T(G) ** 2 / (H + l2))
    assert nodes["gain"][0] == pytest.approx(expected, rel=1e-6)


def test_l1_shrinks_leaves_in_a_fit():
    X, y = _data(seed=3)
    plain = DartRegressor(boosting="mart", n_estimators=5, random_state=0).fit(X, y)
    l1 = DartRegressor(boosting="mart", n_estimators=5, reg_alpha=50.0, random_state=0).fit(X, y)
    leaf = lambda m: np.abs(m.booster_.nodes["value"][m.booster_.nodes["is_leaf"] == 1])  # noqa
    assert leaf(l1).mean() < leaf(plain).mean()

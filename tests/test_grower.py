"""Tree growth (``dartboost/_grower.py``)."""
import numpy as np
import pytest
from kernel_data import mixed_data

from dartboost._binning import BinMapper
from dartboost._grower import TreeGrower


@pytest.fixture
def data():
    return mixed_data()


def test_leaf_values_are_newton_steps(data):
    X, g, h = data
    mapper = BinMapper(random_state=0).fit(X)
    binned = mapper.transform(X)
    grower = TreeGrower(binned, g, h, mapper.n_bins_non_missing_, 255, max_leaf_nodes=4,
                        l2_regularization=2.0, bin_thresholds=mapper.bin_thresholds_)
    nodes, leaves = grower.grow()
    for node_idx, start, stop in leaves:
        rows = grower.partition[start:stop]
        expected = -g[rows].astype(np.float64).sum() / (h[rows].astype(np.float64).sum() + 2.0)
        assert nodes["value"][node_idx] == pytest.approx(expected, rel=1e-5)


def _grow(binned, mapper, g, h, **params):
    grower = TreeGrower(binned, g, h, mapper.n_bins_non_missing_,
                        mapper.missing_values_bin_idx_, bin_thresholds=mapper.bin_thresholds_,
                        **params)
    nodes, leaves = grower.grow()
    return grower, nodes, leaves


@pytest.mark.parametrize("max_leaf_nodes", [256, 257, 400])
def test_trees_beyond_256_leaves(max_leaf_nodes):
    from dartboost._cext import _predictor
    X, g, h = mixed_data(n=20_000, n_features=6, seed=11)
    mapper = BinMapper(random_state=0).fit(X)
    binned = mapper.transform(X)
    grower, nodes, leaves = _grow(binned, mapper, g, h, max_leaf_nodes=max_leaf_nodes,
                                  min_samples_leaf=5)
    assert len(leaves) == max_leaf_nodes == int(nodes["is_leaf"].sum())
    assert nodes.shape[0] == 2 * max_leaf_nodes - 1
    # children indices beyond 255 survive in the node records, and every
    # leaf's slice of the partition is exactly the rows a traversal sends there
    values = np.zeros(X.shape[0])
    _predictor.add_tree_binned(nodes, binned, 255, 1.0, 2, values)
    covered = np.zeros(X.shape[0], dtype=int)
    for node_idx, start, stop in leaves:
        rows = grower.partition[start:stop]
        covered[rows] += 1
        np.testing.assert_array_equal(values[rows], nodes["value"][node_idx])
        assert nodes["count"][node_idx] == stop - start
    np.testing.assert_array_equal(covered, 1)


@pytest.mark.parametrize("max_leaf_nodes", [256, 257, 300])
def test_dart_scores_stay_exact_beyond_256_leaves(max_leaf_nodes):
    # DART adds and removes dropped trees' contributions from cached uint8
    # leaf ids when a tree has <= 256 leaves and by traversal otherwise; the
    # incrementally kept training scores must equal a fresh prediction
    from dartboost import DartRegressor
    rng = np.random.default_rng(4)
    X = rng.normal(size=(4000, 6))
    y = X[:, 0] * 3 + np.sin(4 * X[:, 1]) + rng.normal(scale=0.1, size=4000)
    est = DartRegressor(boosting="dart", n_estimators=6, max_leaf_nodes=max_leaf_nodes,
                        min_samples_leaf=2, drop_rate=0.5, skip_drop=0.0, early_stopping=True,
                        validation_fraction=None, n_iter_no_change=100, random_state=0,
                        n_jobs=2).fit(X, y)
    assert int(est.n_iter_) == 6
    # train keeper: grower's leaf ids (or traversal); validation keeper (same
    # rows): leaf ids by traversal; both against the final model's predict
    np.testing.assert_allclose(est.train_score_, est.validation_score_, rtol=1e-12)
    final = -0.5 * np.mean((y - est.predict(X)) ** 2)
    assert est.train_score_[-1] == pytest.approx(final, rel=1e-10)


def test_trees_do_not_depend_on_the_thread_count():
    # big enough that every kernel takes its parallel path at 2 threads:
    # chunked partition of the root, row/feature-parallel histograms and a
    # parallel split search over 100 features
    from dartboost._common import threads_for
    n, n_features = 120_000, 100
    assert threads_for(n, 2) == 2 and n >= 8192 * 2
    assert threads_for(n_features * 256 * 4, 2) == 2
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, n_features))
    X[rng.random(size=X.shape) < 0.05] = np.nan
    g = (X[:, 0] > 0.3).astype(np.float32) - rng.random(n).astype(np.float32)
    h = rng.uniform(0.2, 1.0, n).astype(np.float32)
    mapper = BinMapper(random_state=0, n_threads=2).fit(X)
    binned = mapper.transform(X)
    trees = []
    for n_threads in (1, 2):
        grower, nodes, leaves = _grow(binned, mapper, g, h, max_leaf_nodes=31,
                                      min_samples_leaf=20, n_threads=n_threads)
        trees.append((nodes, leaves, grower.partition.copy()))
    np.testing.assert_array_equal(trees[0][0], trees[1][0])
    assert trees[0][1] == trees[1][1]
    np.testing.assert_array_equal(trees[0][2], trees[1][2])


@pytest.mark.parametrize("boosting", ["mart", "dart"])
def test_fits_do_not_depend_on_n_jobs_above_the_thresholds(boosting):
    from dartboost import DartClassifier
    rng = np.random.default_rng(1)
    X = rng.normal(size=(110_000, 100))
    y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(scale=0.5, size=X.shape[0]) > 0).astype(int)
    preds = []
    for n_jobs in (1, 2):
        est = DartClassifier(boosting=boosting, n_estimators=3, max_leaf_nodes=15,
                             drop_rate=0.5, skip_drop=0.0, early_stopping=False, random_state=0,
                             n_jobs=n_jobs).fit(X, y)
        preds.append(est.decision_function(X[:5000]))
    np.testing.assert_array_equal(preds[0], preds[1])


def test_histograms_are_sized_by_each_features_bins():
    # a fit's histograms hold one record per bin of each feature plus its
    # missing bin (sparse matrices: thousands of features of a few bins),
    # not n_features x 256; the per-chunk scratch too
    from dartboost._common import HISTOGRAM_DTYPE
    rng = np.random.default_rng(0)
    n = 40_000
    X = np.column_stack([rng.integers(0, 2, n), rng.integers(0, 2, n), rng.normal(size=n)]
                        + [rng.integers(0, 3, n) for _ in range(40)]).astype(float)
    g = (X[:, 2] + rng.normal(size=n)).astype(np.float32)
    h = np.ones(n, np.float32)
    mapper = BinMapper(random_state=0).fit(X)
    binned = mapper.transform(X)
    grower, nodes, _ = _grow(binned, mapper, g, h, max_leaf_nodes=8, n_threads=2)
    n_records = 2 * 3 + 256 + 40 * 4  # bins + the missing bin, per feature
    assert grower.n_records == n_records
    assert nodes["is_leaf"].sum() == 8
    pooled = grower.buffers._free_histograms
    assert pooled and all(hist.nbytes == n_records * HISTOGRAM_DTYPE.itemsize
                          for hist in pooled)
    partial = grower.buffers._partial
    assert partial.shape[1] == n_records
    missing = grower.hist_offsets[1:] - 1  # every feature's last record
    assert grower.feature_records(np.r_[1, 0, np.zeros(41)]).sum() == 3
    assert np.all(np.diff(missing) == np.diff(grower.hist_offsets)[1:])


def test_queued_nodes_out_of_reach_give_their_histograms_back():
    # a node with at least as many queued nodes ahead of it as splits left
    # is never split: its histogram goes back to the pool at once, so a tree
    # holds about half as many histograms, and grows the same
    class KeepAll(TreeGrower):
        def _free_unreachable(self, heap, splits_left):
            pass

    X, g, h = mixed_data(n=30_000, n_features=6, seed=4)
    mapper = BinMapper(random_state=0).fit(X)
    binned = mapper.transform(X)
    trees = []
    for cls in (TreeGrower, KeepAll):
        grower = cls(binned, g, h, mapper.n_bins_non_missing_, 255, max_leaf_nodes=63,
                     min_samples_leaf=5, n_threads=2)
        nodes, leaves = grower.grow()
        trees.append((nodes, leaves, len(grower.buffers._free_histograms)))
    np.testing.assert_array_equal(trees[0][0], trees[1][0])
    assert trees[0][1] == trees[1][1]
    held, held_before = trees[0][2], trees[1][2]  # every histogram made, back in the pool
    assert held_before > 40
    assert held <= 63 // 2 + 4

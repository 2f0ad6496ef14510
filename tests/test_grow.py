"""The fused split step (``_cext/_grow.pyx``): the same histograms, splits and
partitions as the per-kernel calls, the same trees as the step-by-step
grower, and none of it depends on the thread count."""
import numpy as np
import pytest
from kernel_data import mixed_data

from dartboost._binning import BinMapper
from dartboost._cext import _grow, _histogram, _splitting
from dartboost._common import HISTOGRAM_DTYPE
from dartboost._grower import GrowerBuffers, TreeGrower, histogram_offsets


class StepByStepGrower(TreeGrower):
    """Overrides a row-reading step (as dartboost.dask's grower does), so it
    grows on the per-kernel path."""

    def _build_hist(self, node):
        return super()._build_hist(node)


def _data(n, n_features, seed=0, categorical=False):
    X, g, h = mixed_data(n=n, n_features=n_features, seed=seed)
    rng = np.random.default_rng(seed)
    if categorical:
        X[:, 0] = rng.integers(0, 40, n)
        X[:, 3] = rng.integers(0, 3, n)
        g = (g + 0.3 * (X[:, 0] % 5 == 1)).astype(np.float32)
    mapper = BinMapper(random_state=0, is_categorical=(
        np.isin(np.arange(n_features), [0, 3]) if categorical else None)).fit(X)
    return mapper, mapper.transform(X), g, h


def _kernels(binned, g, h, mapper, partition, buffers, mask, n_threads, offsets=None,
             **opts):
    if offsets is None:
        offsets = histogram_offsets(mapper.n_bins_non_missing_)
    return _grow.NodeKernels(
        binned, buffers.row_major(binned), g, h, partition, buffers.left, buffers.right,
        buffers.partial_histograms(offsets[-1], binned.shape[1], 256), mask,
        mapper.n_bins_non_missing_, 255, 1.0, 20, 1e-3, 0.0, n_threads=n_threads,
        offsets=offsets, **opts)


def _empty_hist(mapper):
    return np.empty(histogram_offsets(mapper.n_bins_non_missing_)[-1], HISTOGRAM_DTYPE)


@pytest.mark.parametrize("n_threads", [1, 3])
def test_split_step_matches_the_per_kernel_calls(n_threads):
    # a node of 60% of 50k rows: chunked histograms for the root, a smaller
    # child below 1/16 of the rows (filled from the row-major copy) next
    n, n_features = 50_000, 6
    mapper, binned, g, h = _data(n, n_features, seed=3)
    mask = np.array([1, 1, 1, 0, 1, 1], np.uint8)
    buffers = GrowerBuffers(n)
    rng = np.random.default_rng(0)
    node_rows = np.sort(rng.choice(n, 30_000, replace=False)).astype(np.uint32)
    partition = node_rows.copy()
    kernels = _kernels(binned, g, h, mapper, partition, buffers, mask, n_threads)
    offsets = histogram_offsets(mapper.n_bins_non_missing_)
    parent = _empty_hist(mapper)
    kernels.build(0, partition.size, parent)
    ref_parent = np.empty_like(parent)
    _histogram.build_histogram(binned, node_rows, g, h, mask, False, False, 1, ref_parent,
                               buffers.partial_histograms(offsets[-1], n_features, 256),
                               offsets=offsets)
    m = np.repeat(mask.astype(bool), np.diff(offsets))  # the records of the masked features
    np.testing.assert_array_equal(parent[m], ref_parent[m])

    sum_g, sum_h = float(g[node_rows].sum(dtype=np.float64)), float(
        h[node_rows].sum(dtype=np.float64))
    # a split that sends few rows left: bin 10 of feature 0
    feature, bin_idx = 0, 10
    ref_rows = node_rows.copy()
    n_left = _splitting.split_indices(binned, ref_rows, feature, bin_idx, False, 255,
                                      np.empty(n, np.uint32), np.empty(n, np.uint32), 1)
    assert 0 < n_left * 16 < n
    left_rows, right_rows = ref_rows[:n_left], ref_rows[n_left:]
    gl = float(g[left_rows].sum(dtype=np.float64))
    hl = float(h[left_rows].sum(dtype=np.float64))
    small, large = (np.empty_like(parent) for _ in range(2))
    found, split_left, split_right = kernels.split(
        0, partition.size, feature, bin_idx, False, None, parent, small, large, True,
        gl, hl, -np.inf, np.inf, mask, sum_g - gl, sum_h - hl, -np.inf, np.inf, mask)
    assert found == n_left
    np.testing.assert_array_equal(partition, ref_rows)
    ref_small = np.empty_like(parent)
    _histogram.build_histogram(binned, left_rows, g, h, mask, False, False, 1, ref_small,
                               offsets=offsets)
    np.testing.assert_array_equal(small[m], ref_small[m])
    ref_large = np.empty_like(parent)
    _histogram.subtract_histograms(ref_parent, ref_small, mask, 1, ref_large, offsets=offsets)
    np.testing.assert_array_equal(large[m], ref_large[m])
    for hist, sums, split in ((ref_small, (gl, hl, n_left), split_left),
                              (ref_large, (sum_g - gl, sum_h - hl, right_rows.size),
                               split_right)):
        ref = _splitting.find_best_split(hist, *sums, mapper.n_bins_non_missing_, mask, 255,
                                         1.0, 20, 1e-3, 0.0, 1, offsets=offsets)
        assert split == ref


def _tree(cls, binned, mapper, g, h, n_threads, rng_seed=None, **params):
    grower = cls(binned, g, h, mapper.n_bins_non_missing_, mapper.missing_values_bin_idx_,
                 bin_thresholds=mapper.bin_thresholds_, n_threads=n_threads,
                 rng=None if rng_seed is None else np.random.default_rng(rng_seed),
                 is_categorical=mapper.is_categorical_, **params)
    nodes, leaves = grower.grow()
    return nodes, leaves, grower.partition.copy(), grower.cat_bitsets


OPTIONS = {
    "plain": {},
    "bynode_and_tree_masks": dict(colsample_bynode=0.5, rng_seed=4,
                                  feature_mask=np.array([1, 1, 0, 1, 1, 1, 1], np.uint8)),
    "bounds_l1_depth": dict(monotonic_cst=np.array([1, 0, -1, 0, 0, 0, 0], np.int8),
                            reg_alpha=0.3, max_depth=4, min_child_weight=2.0),
    "interactions": dict(interaction_cst=[[0, 1], [1, 2, 4], [5, 6]]),
    "subsample": dict(sample_indices=np.sort(np.random.default_rng(5).choice(
        30_000, 21_000, replace=False)).astype(np.uint32)),
    "constant_hessians": dict(hessians_are_constant=True, max_leaf_nodes=63),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_fused_and_step_by_step_paths_grow_the_same_tree(name):
    mapper, binned, g, h = _data(30_000, 7, seed=1, categorical=True)
    params = dict(OPTIONS[name])
    params.setdefault("max_leaf_nodes", 31)
    if params.get("hessians_are_constant"):
        h = np.full_like(h, 0.25)
    fused = _tree(TreeGrower, binned, mapper, g, h, 2, **params)
    stepwise = _tree(StepByStepGrower, binned, mapper, g, h, 2, **params)
    np.testing.assert_array_equal(fused[0], stepwise[0])
    assert fused[1] == stepwise[1]
    np.testing.assert_array_equal(fused[2], stepwise[2])
    np.testing.assert_array_equal(fused[3], stepwise[3])
    assert fused[3].shape[0] > 0 or name == "interactions"  # set splits were grown


def test_fused_trees_do_not_depend_on_the_thread_count():
    # above every threshold at 3 threads: chunked root histograms (> 16384
    # rows), partitions of > 3 x 4096 rows, split searches of > 4096 bins
    # per thread, and children below 1/16 of the rows (row-major filling)
    mapper, binned, g, h = _data(80_000, 30, seed=2)
    trees = [_tree(TreeGrower, binned, mapper, g, h, n_threads, max_leaf_nodes=63,
                   min_samples_leaf=10) for n_threads in (1, 2, 3)]
    for other in trees[1:]:
        np.testing.assert_array_equal(trees[0][0], other[0])
        assert trees[0][1] == other[1]
        np.testing.assert_array_equal(trees[0][2], other[2])
    small_leaves = [stop - start for _, start, stop in trees[0][1]]
    assert min(small_leaves) * 16 < 80_000  # the row-major filling was used


def test_phase_timers_add_up():
    mapper, binned, g, h = _data(20_000, 5, seed=0)
    _grow.phase_seconds(reset=True)
    _tree(TreeGrower, binned, mapper, g, h, 1)
    phases = _grow.phase_seconds(reset=True)
    assert set(phases) == set(_grow.PHASES)
    assert phases["partition"] > 0 and phases["histogram"] > 0 and phases["root"] > 0
    assert all(v == 0 for v in _grow.phase_seconds().values())


def test_bad_arguments_are_refused():
    mapper, binned, g, h = _data(2000, 4, seed=0)
    buffers = GrowerBuffers(2000)
    partition = np.arange(2000, dtype=np.uint32)
    mask = np.ones(4, np.uint8)
    with pytest.raises(ValueError, match="one entry per feature"):
        _kernels(binned, g, h, mapper, partition, buffers, mask[:3], 1)
    with pytest.raises(ValueError, match="one value per row"):
        _kernels(binned, g[:10], h, mapper, partition, buffers, mask, 1)
    kernels = _kernels(binned, g, h, mapper, partition, buffers, mask, 1)
    hist = _empty_hist(mapper)
    with pytest.raises(ValueError, match="hist has .* records; the layout has"):
        kernels.build(0, 2000, hist[:-1])
    with pytest.raises(ValueError, match="fewer records than its bins"):
        _kernels(binned, g, h, mapper, partition, buffers, mask, 1,
                 offsets=np.arange(5) * 2)
    with pytest.raises(ValueError, match="out of the partition"):
        kernels.split(0, 3000, 0, 5, False, None, hist, None, None, True, 0., 1., -np.inf,
                      np.inf, None, 0., 1., -np.inf, np.inf, None)
    with pytest.raises(ValueError, match="feature 9 out of range"):
        kernels.split(0, 2000, 9, 5, False, None, hist, None, None, True, 0., 1., -np.inf,
                      np.inf, None, 0., 1., -np.inf, np.inf, None)
    with pytest.raises(ValueError, match="no histogram"):
        kernels.split(0, 2000, 0, 5, False, None, hist, None, None, True, 0., 1., -np.inf,
                      np.inf, mask, 0., 1., -np.inf, np.inf, None)


@pytest.mark.parametrize("row_major_below, column_block", [(0, 4), (10 ** 9, 4), (16, 1),
                                                            (16, 8), (4, 64)])
def test_histogram_layouts_do_not_change_the_tree(row_major_below, column_block):
    mapper, binned, g, h = _data(40_000, 9, seed=6)
    reference = _tree(TreeGrower, binned, mapper, g, h, 2, max_leaf_nodes=31)
    try:
        _grow.set_layout(row_major_below, column_block)
        tuned = _tree(TreeGrower, binned, mapper, g, h, 2, max_leaf_nodes=31)
    finally:
        _grow.set_layout()
    np.testing.assert_array_equal(reference[0], tuned[0])
    np.testing.assert_array_equal(reference[2], tuned[2])


def test_set_layout_refuses_bad_values():
    with pytest.raises(ValueError, match="column_block"):
        _grow.set_layout(16, 65)
    with pytest.raises(ValueError, match="row_major_below"):
        _grow.set_layout(-1, 4)


def test_run_in_team_returns_raises_and_releases_the_team():
    mapper, binned, g, h = _data(2000, 4, seed=0)
    buffers = GrowerBuffers(2000)
    partition = np.arange(2000, dtype=np.uint32)
    kernels = _kernels(binned, g, h, mapper, partition, buffers, np.ones(4, np.uint8), 3)
    assert kernels.run_in_team(lambda: 42) == 42
    assert kernels.run_in_team(lambda: kernels.run_in_team(lambda: "nested")) == "nested"

    def fail():
        raise KeyError("inside the team")

    with pytest.raises(KeyError, match="inside the team"):
        kernels.run_in_team(fail)
    # the team was released: splits run again, in a new team and without one
    hist = _empty_hist(mapper)
    kernels.build(0, 2000, hist)
    found = kernels.run_in_team(lambda: kernels.split(
        0, 2000, 0, 100, False, None, hist, None, None, True, 0., 1., -np.inf, np.inf, None,
        0., 1., -np.inf, np.inf, None)[0])
    assert found == int((binned[:, 0] <= 100).sum())


@pytest.mark.parametrize("params", [dict(), dict(subsample=0.7), dict(max_leaf_nodes=300),
                                    dict(n_classes=3)])
def test_mart_training_scores_from_the_partition_equal_predictions(params):
    # a new MART tree's training scores are a gather of the leaves the
    # partition gives (a traversal with subsampling or > 256 leaves)
    from sklearn.datasets import make_classification

    from dartboost import DartClassifier
    params = dict(params)
    n_classes = params.pop("n_classes", 2)
    X, y = make_classification(3000, 8, n_informative=5, n_classes=n_classes,
                               random_state=0)

    class KeepTrainingScores:
        def on_fit_end(self, estimator):
            self.raw = estimator._fit_train_raw.copy()

    cb = KeepTrainingScores()
    est = DartClassifier(boosting="mart", n_estimators=30, random_state=0,
                         early_stopping=False, min_samples_leaf=2, callbacks=[cb],
                         **{"max_leaf_nodes": 15, **params}).fit(X, y)
    raw = est.decision_function(X)
    np.testing.assert_allclose(cb.raw.T.reshape(raw.shape), raw, rtol=1e-9, atol=1e-12)

"""Compiled kernels against naive NumPy versions."""
import numpy as np
import pytest

from dartboost._binning import BinMapper
from dartboost._cext import _histogram, _predictor, _splitting
from dartboost._common import HISTOGRAM_DTYPE
from dartboost._grower import TreeGrower


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 5))
    X[:, 1] = rng.integers(0, 7, size=3000)  # few distinct values
    X[rng.random(3000) < 0.1, 2] = np.nan     # missing values
    g = rng.normal(size=3000).astype(np.float32)
    h = rng.uniform(0.5, 1.5, size=3000).astype(np.float32)
    return X, g, h


def test_binning_matches_searchsorted(data):
    X, _, _ = data
    mapper = BinMapper(max_bins=32, random_state=0).fit(X)
    binned = mapper.transform(X)
    assert binned.flags.f_contiguous and binned.dtype == np.uint8
    for f in range(X.shape[1]):
        col = X[:, f]
        expected = np.searchsorted(mapper.bin_thresholds_[f], col, side="left")
        expected[np.isnan(col)] = mapper.missing_values_bin_idx_
        np.testing.assert_array_equal(binned[:, f], expected)
    # few distinct values get one bin each
    assert mapper.n_bins_non_missing_[1] == 7
    assert np.all(mapper.n_bins_non_missing_ <= 32)


def test_binning_thresholds_from_subsample_are_quantiles():
    rng = np.random.default_rng(1)
    X = rng.uniform(size=(50_000, 1))
    mapper = BinMapper(max_bins=10, subsample=20_000, random_state=0).fit(X)
    counts = np.bincount(mapper.transform(X)[:, 0], minlength=10)
    assert counts.min() > 0.08 * X.shape[0] and counts.max() < 0.12 * X.shape[0]


def _naive_hist(binned, rows, g, h, n_bins):
    out = np.zeros((binned.shape[1], n_bins), dtype=HISTOGRAM_DTYPE)
    for f in range(binned.shape[1]):
        b = binned[rows, f]
        out["sum_gradients"][f] = np.bincount(b, weights=g[rows], minlength=n_bins)
        out["sum_hessians"][f] = np.bincount(b, weights=h[rows], minlength=n_bins)
        out["count"][f] = np.bincount(b, minlength=n_bins)
    return out


def test_histograms_and_subtraction(data):
    X, g, h = data
    mapper = BinMapper(max_bins=64, random_state=0).fit(X)
    binned = mapper.transform(X)
    n_bins = 65
    rows = np.sort(np.random.default_rng(2).choice(X.shape[0], 1200, replace=False)).astype(
        np.uint32)
    mask = np.ones(X.shape[1], dtype=np.uint8)
    og, oh = np.empty(3000, np.float32), np.empty(3000, np.float32)
    hist = np.empty((X.shape[1], n_bins), dtype=HISTOGRAM_DTYPE)
    _histogram.build_histogram(binned, rows, g, h, og, oh, mask, False, False, 2, hist)
    ref = _naive_hist(binned, rows, g, h, n_bins)
    for field in ("sum_gradients", "sum_hessians"):
        np.testing.assert_allclose(hist[field], ref[field], rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(hist["count"], ref["count"])

    all_rows = np.arange(3000, dtype=np.uint32)
    parent = np.empty_like(hist)
    _histogram.build_histogram(binned, all_rows, g, h, og, oh, mask, True, False, 2, parent)
    other = np.setdiff1d(all_rows, rows).astype(np.uint32)
    sub = np.empty_like(hist)
    _histogram.subtract_histograms(parent, hist, mask, 2, sub)
    ref_other = _naive_hist(binned, other, g, h, n_bins)
    np.testing.assert_array_equal(sub["count"], ref_other["count"])
    np.testing.assert_allclose(sub["sum_gradients"], ref_other["sum_gradients"], atol=1e-4)

    # constant hessians: only gradients and counts are summed
    ones = np.ones(3000, np.float32)
    const = np.empty_like(hist)
    _histogram.build_histogram(binned, rows, g, ones, og, oh, mask, False, True, 2, const)
    ref_const = _naive_hist(binned, rows, g, ones, n_bins)
    np.testing.assert_array_equal(const["sum_hessians"], ref_const["sum_hessians"])
    np.testing.assert_allclose(const["sum_gradients"], ref_const["sum_gradients"], atol=1e-5)


def _naive_best_split(binned, g, h, n_bins_nm, missing_bin, l2, msl):
    G, H, n = g.sum(), h.sum(), g.size
    parent = G * G / (H + l2)
    best = (-np.inf, None)
    for f in range(binned.shape[1]):
        col = binned[:, f]
        miss = col == missing_bin
        for b in range(n_bins_nm[f]):
            for miss_left in (False, True):
                left = (col <= b) & ~miss
                if miss_left:
                    left |= miss
                nl = left.sum()
                if nl < msl or n - nl < msl:
                    continue
                gl, hl = g[left].sum(), h[left].sum()
                gain = gl * gl / (hl + l2) + (G - gl) ** 2 / (H - hl + l2) - parent
                if gain > best[0] + 1e-9:
                    best = (gain, (f, b, nl))
    return best


def test_split_finding_matches_brute_force(data):
    X, g, h = data
    X, g, h = X[:400], g[:400].astype(np.float64), h[:400].astype(np.float64)
    mapper = BinMapper(max_bins=16, random_state=0).fit(X)
    binned = mapper.transform(X)
    hist = _naive_hist(binned, np.arange(400), g, h, 17)
    res = _splitting.find_best_split(hist, g.sum(), h.sum(), 400, mapper.n_bins_non_missing_,
                                     np.ones(5, np.uint8), 16, 1.0, 5, 1e-3, 0.0, 2)
    ref_gain, (f, b, nl) = _naive_best_split(binned, g, h, mapper.n_bins_non_missing_, 16,
                                             1.0, 5)
    gain, feature, bin_idx, _, _, _, n_left = res
    assert gain == pytest.approx(ref_gain, rel=1e-9)
    assert (feature, n_left) == (f, nl) or gain == pytest.approx(ref_gain, rel=1e-12)


def test_split_indices_is_stable_partition(data):
    X, _, _ = data
    mapper = BinMapper(random_state=0).fit(X)
    binned = mapper.transform(X)
    rows = np.arange(0, 3000, 2, dtype=np.uint32)
    for missing_left in (False, True):
        part = rows.copy()
        n_left = _splitting.split_indices(binned, part, 2, 100, missing_left, 255,
                                          np.empty(3000, np.uint32), np.empty(3000, np.uint32), 2)
        col = binned[rows, 2]
        goes_left = np.where(col == 255, missing_left, col <= 100)
        np.testing.assert_array_equal(part[:n_left], rows[goes_left])
        np.testing.assert_array_equal(part[n_left:], rows[~goes_left])


def _naive_tree_value(nodes, x):
    node = 0
    while not nodes["is_leaf"][node]:
        v = x[nodes["feature_idx"][node]]
        if np.isnan(v):
            left = nodes["missing_go_to_left"][node]
        else:
            left = v <= nodes["num_threshold"][node]
        node = nodes["left"][node] if left else nodes["right"][node]
    return nodes["value"][node]


def test_prediction_raw_and_binned_agree_with_naive(data):
    X, g, h = data
    mapper = BinMapper(random_state=0).fit(X)
    binned = mapper.transform(X)
    grower = TreeGrower(binned, g, h, mapper.n_bins_non_missing_, 255, max_leaf_nodes=15,
                        min_samples_leaf=10, bin_thresholds=mapper.bin_thresholds_)
    nodes, leaves = grower.grow()
    assert (nodes["is_leaf"] == 1).sum() == len(leaves) == 15
    naive = np.array([_naive_tree_value(nodes, x) for x in X])
    out = np.zeros((X.shape[0], 1))
    _predictor.predict_raw(nodes, np.array([0, nodes.shape[0]], np.int64), np.array([0.5]), 1,
                           np.ascontiguousarray(X), 2, out)
    np.testing.assert_allclose(out[:, 0], 0.5 * naive)
    scores = np.zeros(X.shape[0])
    _predictor.add_tree_binned(nodes, binned, 255, 1.0, 2, scores)
    np.testing.assert_array_equal(scores, naive)
    # leaf values of the training rows from the grower's partition
    for node_idx, start, stop in leaves:
        np.testing.assert_array_equal(naive[grower.partition[start:stop]],
                                      nodes["value"][node_idx])


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

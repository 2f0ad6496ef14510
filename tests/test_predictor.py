"""Predictor kernels (``_cext/_predictor.pyx``, and the raw-data traversal of
``_cext/_packed_predictor.pyx``) against a naive traversal."""
import numpy as np
import pytest
from kernel_data import mixed_data

from dartboost._binning import BinMapper
from dartboost._cext import _packed_predictor, _predictor
from dartboost._grower import TreeGrower


@pytest.fixture
def data():
    return mixed_data()


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
    packed, values, _, roots, depths = _packed_predictor.pack_trees(
        nodes, np.array([0, nodes.shape[0]], np.int64), X.shape[1])
    _packed_predictor.predict_raw(packed, values, roots, depths, np.array([0], np.int64),
                                  np.array([0.5]), 1, np.ascontiguousarray(X), 2, out)
    np.testing.assert_array_equal(out[:, 0], 0.5 * naive)
    scores = np.zeros(X.shape[0])
    _predictor.add_tree_binned(nodes, binned, 255, 1.0, 2, scores)
    np.testing.assert_array_equal(scores, naive)
    # leaf values of the training rows from the grower's partition
    for node_idx, start, stop in leaves:
        np.testing.assert_array_equal(naive[grower.partition[start:stop]],
                                      nodes["value"][node_idx])


@pytest.mark.parametrize("n_threads", [1, 3])
def test_set_leaf_ids_writes_each_leafs_rows(n_threads):
    rng = np.random.default_rng(0)
    partition = rng.permutation(50_000).astype(np.uint32)
    bounds = np.sort(rng.choice(np.arange(1, 50_000), 20, replace=False))
    starts = np.r_[0, bounds].astype(np.int64)
    stops = np.r_[bounds, 50_000].astype(np.int64)
    out = np.full(50_000, 255, np.uint8)
    _predictor.set_leaf_ids(partition, starts, stops, out, n_threads)
    expected = np.empty(50_000, np.uint8)
    for leaf, (a, b) in enumerate(zip(starts, stops)):
        expected[partition[a:b]] = leaf
    np.testing.assert_array_equal(out, expected)

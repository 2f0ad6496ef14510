"""Distributed training on mostly-default features equals local training: each
partition fills them from its own entries (default bins by subtraction from
its own totals), the client sums the partitions' histograms."""
import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from dartboost import DartRegressor  # noqa: E402
from dartboost.dask import DaskDartRegressor  # noqa: E402


def test_mostly_default_features_equal_local(client):
    rng = np.random.default_rng(0)
    n = 2000
    X = np.where(rng.random((n, 6)) < 0.06, rng.normal(size=(n, 6)), 0.0)
    X[:, 0] = rng.normal(size=n)  # one dense feature
    y = X[:, 0] + 3 * (X[:, 1] > 0) - 2 * (X[:, 2] < 0) + rng.normal(size=n) * 0.1
    params = dict(n_estimators=6, max_leaf_nodes=8, min_samples_leaf=5, random_state=0,
                  early_stopping=False, boosting="mart")
    dist = DaskDartRegressor(**params).fit(da.from_array(X, chunks=(700, 6)),
                                           da.from_array(y, chunks=700))
    local = DartRegressor(**params).fit(X, y)
    a, b = dist.booster_, local.booster_
    np.testing.assert_array_equal(a.tree_offsets, b.tree_offsets)
    for field in ("feature_idx", "bin_threshold", "missing_go_to_left", "is_leaf", "left"):
        np.testing.assert_array_equal(a.nodes[field], b.nodes[field])
    np.testing.assert_allclose(a.nodes["value"], b.nodes["value"], rtol=1e-9, atol=1e-10)
    inner = a.nodes["is_leaf"] == 0
    assert set(a.nodes["feature_idx"][inner]) & {1, 2}  # the sparse-filled features split

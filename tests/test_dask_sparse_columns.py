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


def test_partitions_keep_mostly_default_features_as_entries(client, monkeypatch):
    # each worker's training and eval partitions hold the dense feature's
    # column and the others' entries (as a local fit's binned matrix), and
    # DART with an eval set still grows the local model's trees
    from dartboost._sparse_columns import SparseBinned
    from dartboost.dask import _worker
    seen = []
    for cls in (_worker.PartitionState, _worker.EvalState):
        init = cls.__init__

        def spy(self, X_binned, *args, _init=init, **kwargs):
            seen.append(X_binned)
            _init(self, X_binned, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", spy)
    rng = np.random.default_rng(1)
    n = 2100
    X = np.where(rng.random((n, 5)) < 0.05, rng.integers(1, 4, (n, 5)), 0.0)
    X[:, 0] = rng.normal(size=n)
    y = X[:, 0] + 2 * (X[:, 1] > 1) - X[:, 3] + rng.normal(size=n) * 0.1
    params = dict(n_estimators=5, max_leaf_nodes=6, min_samples_leaf=5, random_state=0,
                  early_stopping=False, boosting="dart", drop_rate=0.5)
    dist = DaskDartRegressor(**params).fit(
        da.from_array(X[:1500], chunks=(500, 5)), da.from_array(y[:1500], chunks=500),
        eval_set=[(da.from_array(X[1500:], chunks=(300, 5)),
                   da.from_array(y[1500:], chunks=300))])
    local = DartRegressor(**params).fit(X[:1500], y[:1500], eval_set=[(X[1500:], y[1500:])])
    assert len(seen) == 5 and all(isinstance(b, SparseBinned) for b in seen)
    assert {b.dense.shape for b in seen} == {(500, 1), (300, 1)}
    a, b = dist.booster_, local.booster_
    for field in ("feature_idx", "bin_threshold", "missing_go_to_left", "is_leaf", "left"):
        np.testing.assert_array_equal(a.nodes[field], b.nodes[field])
    np.testing.assert_allclose(a.nodes["value"], b.nodes["value"], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(dist.predict(X[1500:]), local.predict(X[1500:]), rtol=1e-9,
                               atol=1e-10)

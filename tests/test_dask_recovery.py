"""A worker lost mid-fit: resume from the coded checkpoint (dartboost.dask)."""
import os

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from dartboost import DartRegressor  # noqa: E402
from dartboost.dask import DaskDartRegressor  # noqa: E402
from dartboost.store import CheckpointCallback, ModelStore  # noqa: E402

PARAMS = dict(boosting="dart", n_estimators=6, max_leaf_nodes=6, random_state=0,
              early_stopping=False, skip_drop=0.0, drop_rate=0.3)


class KillAt:
    """Callback that kills one worker process at the end of iteration ``at``."""

    def __init__(self, client, at):
        self.client, self.at, self.done = client, at, False

    def on_iteration_end(self, est, t, logs=None):
        if t == self.at and not self.done:
            self.done = True
            victim = sorted(self.client.nthreads())[0]
            self.kill = self.client.submit(os._exit, 1, workers=[victim], pure=False)


@pytest.mark.slow
def test_killed_worker_resumes_from_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(900, 4))
    y = X[:, 0] + np.sin(X[:, 1]) + rng.normal(size=900) * 0.1
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        # k + r = 3 + 2 shards, each in its own folder of the shared location
        store = ModelStore([str(tmp_path / f"shard{i}") for i in range(5)], k=3, r=2)
        cb = CheckpointCallback(store, "run", every=2)
        est = DaskDartRegressor(**PARAMS, callbacks=[cb, KillAt(client, 3)])
        est.fit(da.from_array(X, chunks=(300, 4)), da.from_array(y, chunks=300))
        assert len(est.recoveries_) == 1
        assert est.recoveries_[0]["resumed_at_iteration"] == 4
    local = DartRegressor(**PARAMS).fit(X, y)
    np.testing.assert_allclose(est.predict(X), local.predict(X), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(est.booster_.nodes["feature_idx"],
                                  local.booster_.nodes["feature_idx"])


@pytest.mark.slow
def test_scattered_data_lost_with_its_worker_is_a_clear_error():
    # in-memory partitions scattered to the workers have no graph to recompute
    # them from: DataLost, and nothing of the fit is left on the workers
    import dask
    from dartboost.dask import DataLost, _worker
    rng = np.random.default_rng(1)
    X = rng.normal(size=(900, 4))
    y = X[:, 0] + rng.normal(size=900) * 0.1
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        workers = sorted(client.nthreads())
        xs, ys = [], []
        for i in range(3):
            rows = slice(300 * i, 300 * (i + 1))
            fx, fy = client.scatter([X[rows], y[rows]], workers=[workers[i % 2]])
            xs.append(da.from_delayed(dask.delayed(fx), shape=(300, 4), dtype=float))
            ys.append(da.from_delayed(dask.delayed(fy), shape=(300,), dtype=float))
        est = DaskDartRegressor(**PARAMS, callbacks=[KillAt(client, 2)])
        with pytest.raises(DataLost, match="cannot be recomputed"):
            est.fit(da.concatenate(xs), da.concatenate(ys))
        client.wait_for_workers(2, timeout=30)  # the nanny restarts the killed one
        assert sum(client.run(_worker.n_states).values()) == 0


@pytest.mark.slow
def test_killed_worker_with_categories_and_a_validation_split(tmp_path):
    # the encoded and held-out partitions are recomputed from their lineage
    # (the persisted frame, the split tasks) after a real worker loss
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    rng = np.random.default_rng(2)
    n = 1200
    df = pd.DataFrame({"x": rng.normal(size=n),
                       "c": pd.Series(rng.choice([f"v{i}" for i in range(15)], n),
                                      dtype=object)})
    y = df["x"].to_numpy() + df["c"].str[1:].astype(int).to_numpy() / 5 \
        + rng.normal(size=n) * 0.1
    params = dict(PARAMS, n_estimators=8, early_stopping=True, n_iter_no_change=50,
                  validation_fraction=0.2, min_data_per_group=10)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        store = ModelStore([str(tmp_path / f"shard{i}") for i in range(5)], k=3, r=2)
        cb = CheckpointCallback(store, "run", every=2)
        est = DaskDartRegressor(**params, callbacks=[cb, KillAt(client, 3)])
        est.fit(dd.from_pandas(df, npartitions=3), dd.from_pandas(pd.Series(y), npartitions=3))
        assert len(est.recoveries_) == 1
    local = DartRegressor(**params).fit(df, y)
    np.testing.assert_allclose(est.predict(df), local.predict(df), rtol=0, atol=1e-9)
    np.testing.assert_allclose(est.evals_result_["validation"]["l2"],
                               local.evals_result_["validation"]["l2"], rtol=1e-12)

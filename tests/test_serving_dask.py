"""CodedPool on a Dask cluster (a LocalCluster of single-threaded worker processes)."""

import time

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LinearRegression, LogisticRegression

pytest.importorskip("distributed")

from dartboost.coded import CodedPredictor  # noqa: E402
from dartboost.serving import CodedPool, FaultSpec  # noqa: E402
from process_utils import alive


def test_dask_pool_exact_decoded_and_worker_kill():
    X, y = make_classification(n_samples=800, n_features=6, random_state=5)
    base = LogisticRegression(max_iter=500).fit(X, y)
    cp = CodedPredictor(base, k=2, parity_estimator=LinearRegression(), random_state=0).fit(X)
    # The pool starts (and owns) a LocalCluster on 127.0.0.1 with one worker
    # process per slot; slot 0 is slow and, with ParM's first-k policy
    # (decode_wait=0), some of its batches are decoded.
    pool = CodedPool(cp, backend="dask", n_workers=2, batch_size=1, group_timeout=0.005, decode_wait=0,
                     faults={0: FaultSpec(service_time=0.05), 1: FaultSpec(service_time=0.005),
                             2: FaultSpec(service_time=0.005)}, hang_timeout=20.0)
    try:
        pids_before = pool.worker_pids()
        futs = []
        for i in range(60):
            futs.append(pool.submit(X[i][None, :]))
            time.sleep(0.005)
            if i == 30:
                assert pool.kill_worker(1)  # the nanny restarts it under a new address
        errors = [f.exception(timeout=120) for f in futs]
        res = [f.result() for f in futs]
        assert pool.wait_ready(120)
        st = pool.stats()
        pids_after = pool.worker_pids()
        np.testing.assert_array_equal(pool.predict(X[:5]), base.predict(X[:5]))
    finally:
        pool.close()
    assert all(e is None for e in errors)
    vals = np.concatenate([r.values for r in res])
    approx = np.concatenate([r.approximate for r in res])
    np.testing.assert_array_equal(vals, base.predict(X[:60]))
    assert st["rows_reconstructed"] == approx.sum() > 0
    assert st["worker_restarts"] >= 1 and pids_after[1] != pids_before[1]
    # Closing the pool closes the cluster it started: no worker is left.
    pids = set(pids_before.values()) | set(pids_after.values())
    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)

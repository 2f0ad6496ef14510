"""The HTTP server's micro-batcher: merging without losing per-request isolation.

In-process "thread" backend pools; every loop is bounded.
"""

import asyncio

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from dartboost.serving import CodedPool
from dartboost.serving._errors import ModelError, PoolClosedError
from dartboost.serving._microbatch import MicroBatcher

MARKER = 12345.0


class FailsOnMarker(LogisticRegression):
    """A classifier whose model call fails on any batch holding a row with x0 == MARKER."""

    def decision_function(self, X):
        X = np.asarray(X)
        if (X[:, 0] == MARKER).any():
            raise RuntimeError("model failure on a marked row")
        return super().decision_function(X)


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=400, n_features=5, random_state=1)
    return X, FailsOnMarker(max_iter=500).fit(X, y)


async def _gather(batcher, rows, timeout=30):
    futs = []
    for X in rows:
        try:
            futs.append(batcher.submit(X))
        except ValueError as exc:
            futs.append(exc)
    out = []
    for f in futs:
        if isinstance(f, Exception):
            out.append(f)
            continue
        try:
            out.append(await asyncio.wait_for(f, timeout))
        except Exception as exc:  # noqa: BLE001 - collected and checked by the test
            out.append(exc)
    return out


def test_concurrent_rows_are_merged_and_split_back(data):
    X, base = data
    with CodedPool(base, mode="none", n_workers=1, backend="thread", batch_size=32) as pool:
        before = pool.stats()["requests"]
        batcher = MicroBatcher(pool, max_rows=32, max_inflight=2)
        rows = [X[i:i + 1] for i in range(100)] + [X[100:103]]
        res = asyncio.run(_gather(batcher, rows))
        # Every request gets its own rows' answers, exact.
        for Xi, r in zip(rows, res):
            assert r.values.tolist() == base.predict(Xi).tolist()
            assert r.raw.shape == (len(Xi), 1) and not r.approximate.any()
            assert r.latency >= 0
        # Fewer pool requests than HTTP requests: they were merged.
        made = pool.stats()["requests"] - before
        assert made < len(rows) / 4 and batcher.merged_requests >= 1


def test_one_bad_row_fails_only_its_own_request(data):
    # A model failure on a merged request must not fail the requests merged with it.
    X, base = data
    with CodedPool(base, mode="none", n_workers=1, backend="thread", batch_size=16) as pool:
        batcher = MicroBatcher(pool, max_rows=16, max_inflight=1)
        rows = [X[i:i + 1].copy() for i in range(12)]
        rows[5][0, 0] = MARKER
        res = asyncio.run(_gather(batcher, rows))
        for i, (Xi, r) in enumerate(zip(rows, res)):
            if i == 5:
                assert isinstance(r, ModelError)
            else:
                assert r.values.tolist() == base.predict(Xi).tolist()


def test_malformed_request_is_refused_alone(data):
    X, base = data
    with CodedPool(base, mode="none", n_workers=1, backend="thread") as pool:
        batcher = MicroBatcher(pool, max_rows=8, max_inflight=1)
        bad_inf = X[:1].copy()
        bad_inf[0, 2] = np.inf
        rows = [X[:1], bad_inf, X[1:2], X[:1, :3], X[2:3]]
        res = asyncio.run(_gather(batcher, rows))
        assert isinstance(res[1], ValueError) and "infinite" in str(res[1])
        assert isinstance(res[3], ValueError) and "features" in str(res[3])
        for i in (0, 2, 4):
            assert res[i].values.tolist() == base.predict(rows[i]).tolist()


def test_large_requests_bypass_and_closed_pool_refuses(data):
    X, base = data
    pool = CodedPool(base, mode="none", n_workers=1, backend="thread", batch_size=8)
    batcher = MicroBatcher(pool, max_rows=8, max_inflight=1)
    res = asyncio.run(_gather(batcher, [X[:50], X[50:51]]))
    assert res[0].values.tolist() == base.predict(X[:50]).tolist()
    assert res[1].values.tolist() == base.predict(X[50:51]).tolist()
    pool.close()

    async def after_close():
        with pytest.raises(PoolClosedError):
            batcher.submit(X[:1])

    asyncio.run(after_close())
    with pytest.raises(ValueError):
        MicroBatcher(pool, max_rows=0, max_inflight=1)

"""DaskDartRanker equals DartRanker on the same queries (dartboost.dask)."""
import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from dartboost.dask import DaskDartRanker  # noqa: E402
from dartboost.ranking import DartRanker, make_ranking_data  # noqa: E402

PARAMS = dict(n_estimators=5, max_leaf_nodes=8, random_state=0, early_stopping=False,
              min_samples_leaf=5)


def _queries():
    X, y, qid = make_ranking_data(40, random_state=0)
    sizes = np.diff(np.flatnonzero(np.r_[True, qid[1:] != qid[:-1], True]))
    # partition boundaries at query boundaries: 4 partitions of 10 queries
    bounds = np.cumsum(sizes)[[9, 19, 29, 39]]
    chunks = tuple(np.diff(np.r_[0, bounds]).tolist())
    return X, y, qid, sizes, chunks


def _assert_same_model(dist, local):
    a, b = dist.booster_, local.booster_
    for field in ("feature_idx", "bin_threshold", "missing_go_to_left", "is_leaf", "left"):
        np.testing.assert_array_equal(a.nodes[field], b.nodes[field])
    np.testing.assert_allclose(a.nodes["value"], b.nodes["value"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.weights, b.weights, rtol=0, atol=1e-15)


@pytest.mark.parametrize("boosting", ["mart", "dart"])
def test_ranker_equals_local_qid(client, boosting):
    X, y, qid, sizes, chunks = _queries()
    params = dict(PARAMS, boosting=boosting, drop_rate=0.3, skip_drop=0.0)
    dist = DaskDartRanker(**params).fit(
        da.from_array(X, chunks=(chunks, X.shape[1])), da.from_array(y, chunks=(chunks,)),
        qid=da.from_array(qid, chunks=(chunks,)))
    local = DartRanker(**params).fit(X, y, qid=qid)
    _assert_same_model(dist, local)
    pred = dist.predict(da.from_array(X, chunks=(chunks, X.shape[1]))).compute()
    np.testing.assert_allclose(pred, local.predict(X), rtol=0, atol=1e-9)
    assert type(dist.to_local()) is DartRanker


def test_ranker_equals_local_group_and_weights(client):
    X, y, qid, sizes, chunks = _queries()
    qw = np.random.default_rng(1).uniform(0.5, 2.0, size=sizes.size)
    w = np.repeat(qw, sizes)
    group_chunks = (10, 10, 10, 10)
    dist = DaskDartRanker(**PARAMS).fit(
        da.from_array(X, chunks=(chunks, X.shape[1])), da.from_array(y, chunks=(chunks,)),
        group=da.from_array(sizes, chunks=(group_chunks,)),
        sample_weight=da.from_array(w, chunks=(chunks,)))
    local = DartRanker(**PARAMS).fit(X, y, group=sizes, sample_weight=w)
    _assert_same_model(dist, local)


def test_query_spanning_partitions_is_an_error(client):
    X, y, qid, sizes, chunks = _queries()
    shifted = (chunks[0] + 1, chunks[1] - 1) + chunks[2:]  # query 10 straddles
    dX = da.from_array(X, chunks=(shifted, X.shape[1]))
    dy = da.from_array(y, chunks=(shifted,))
    with pytest.raises(ValueError, match="query .* spans? partitions|must not span"):
        DaskDartRanker(**PARAMS).fit(dX, dy, qid=da.from_array(qid, chunks=(shifted,)))
    with pytest.raises(ValueError, match="must not span partitions"):
        DaskDartRanker(**PARAMS).fit(dX, dy, group=da.from_array(sizes, chunks=(10,) * 4))
    with pytest.raises(ValueError, match="one chunk of query sizes per partition"):
        DaskDartRanker(**PARAMS).fit(dX, dy, group=da.from_array(sizes, chunks=20))
    with pytest.raises(ValueError, match="exactly one of group"):
        DaskDartRanker(**PARAMS).fit(dX, dy)
    from dartboost.dask import _worker
    assert sum(client.run(_worker.n_states).values()) == 0

"""DartRanker: LambdaMART kernel against a naive reference, NDCG, query
handling, early stopping by whole queries, sklearn tooling and model state."""
import pickle

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.metrics import ndcg_score as sk_ndcg_score
from sklearn.model_selection import GroupKFold, cross_validate

from dartboost.model_io import estimator_from_state
from dartboost.ranking import DartRanker, make_ranking_data, ndcg_score
from dartboost._ranking_loss import LambdaRankLoss, RankingTarget, query_offsets


@pytest.fixture(scope="module")
def data():
    X, y, qid = make_ranking_data(160, min_docs=5, max_docs=30, n_features=12,
                                  random_state=0)
    split = qid < 120
    return X[split], y[split], qid[split], X[~split], y[~split], qid[~split]


def _reference_lambdas(labels, scores, offsets, truncation, sigma, norm, qweight=None):
    """Plain-Python LambdaMART gradients, written from the definition."""
    n = labels.shape[0]
    g, h = np.zeros(n), np.zeros(n)
    gains = 2.0 ** labels - 1
    for q in range(offsets.shape[0] - 1):
        a, b = offsets[q], offsets[q + 1]
        lab, s, gain = labels[a:b], scores[a:b], gains[a:b]
        m = b - a
        order = sorted(range(m), key=lambda i: -s[i])  # stable
        rank = np.empty(m, dtype=int)
        rank[order] = np.arange(m)
        depth = m if truncation is None else min(truncation, m)
        ideal = np.sort(gain)[::-1][:depth]
        max_dcg = np.sum(ideal / np.log2(np.arange(ideal.size) + 2))
        if m < 2 or max_dcg == 0:
            continue
        gq, hq, total = np.zeros(m), np.zeros(m), 0.0
        spread = s.max() != s.min()
        for i in range(m):
            for j in range(m):
                if lab[i] <= lab[j]:
                    continue
                # i is the more relevant one; the pair counts when the better
                # placed of the two is within the truncation depth
                if min(rank[i], rank[j]) >= depth:
                    continue
                ds = s[i] - s[j]
                delta = abs(gain[i] - gain[j]) * abs(
                    1 / np.log2(rank[i] + 2) - 1 / np.log2(rank[j] + 2)) / max_dcg
                if norm and spread:
                    delta /= 0.01 + abs(ds)
                rho = 1 / (1 + np.exp(sigma * ds))
                gq[i] -= sigma * delta * rho
                gq[j] += sigma * delta * rho
                hq[i] += sigma ** 2 * delta * rho * (1 - rho)
                hq[j] += sigma ** 2 * delta * rho * (1 - rho)
                total += 2 * sigma * delta * rho
        factor = 1.0 if qweight is None else qweight[q]
        if norm and total > 0:
            factor *= np.log2(1 + total) / total
        g[a:b], h[a:b] = gq * factor, hq * factor
    return g, h


@pytest.mark.parametrize("truncation", [None, 3])
@pytest.mark.parametrize("norm", [True, False])
def test_lambdas_match_reference(truncation, norm):
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 40, size=25)
    n = int(sizes.sum())
    labels = rng.integers(0, 5, size=n).astype(float)
    labels[: sizes[0]] = 0  # a query without relevant documents
    scores = np.round(rng.standard_normal(n), 1)  # ties exercise the stable order
    offsets = query_offsets(n, group=sizes)
    qweight = rng.uniform(0.5, 2.0, size=sizes.size)
    target = RankingTarget(labels, offsets, qweight)
    loss = LambdaRankLoss(truncation_level=truncation, sigma=1.3, norm=norm)
    g = np.empty((1, n), np.float32)
    h = np.empty((1, n), np.float32)
    loss.gradients(target, scores[None], None, 2, g, h)
    g_ref, h_ref = _reference_lambdas(labels, scores, offsets, truncation, 1.3, norm, qweight)
    np.testing.assert_allclose(g[0], g_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h[0], h_ref, rtol=1e-5, atol=1e-6)
    assert np.all(g[0][: sizes[0]] == 0)
    # lambdas of a query sum to zero: each pair pushes one up, one down
    for a, b in zip(offsets[:-1], offsets[1:]):
        assert abs(g[0][a:b].sum()) < 1e-4


@pytest.mark.parametrize("k", [1, 5, None])
def test_ndcg_matches_sklearn(k):
    rng = np.random.default_rng(2)
    sizes = rng.integers(2, 30, size=30)
    n = int(sizes.sum())
    y = rng.integers(0, 5, size=n).astype(float)
    qid = np.repeat(np.arange(sizes.size), sizes)
    y[qid == 0] = 0  # counts as NDCG 1
    scores = rng.standard_normal(n)  # no ties: sklearn averages tied positions
    ours = ndcg_score(y, scores, qid=qid, k=k)
    per_query = [1.0]
    for q in range(1, sizes.size):
        m = qid == q
        per_query.append(sk_ndcg_score([2 ** y[m] - 1], [scores[m]], k=k))
    assert ours == pytest.approx(np.mean(per_query), rel=1e-12)
    linear = ndcg_score(y, scores, group=sizes, k=k, label_gain="linear")
    ref = [1.0] + [sk_ndcg_score([y[qid == q]], [scores[qid == q]], k=k)
                   for q in range(1, sizes.size)]
    assert linear == pytest.approx(np.mean(ref), rel=1e-12)
    assert ndcg_score(y, y, qid=qid, k=k) == pytest.approx(1.0)


@pytest.mark.parametrize("boosting", ["mart", "dart"])
def test_ranker_learns(data, boosting):
    X, y, qid, Xt, yt, qidt = data
    ranker = DartRanker(boosting=boosting, n_estimators=30, random_state=0).fit(X, y, qid=qid)
    baseline = ndcg_score(yt, np.zeros_like(yt), qid=qidt)
    oracle = ndcg_score(yt, yt, qid=qidt)
    got = ranker.score(Xt, yt, qid=qidt)
    assert got > baseline + 0.15 and got <= oracle
    assert ranker.n_iter_ == 30 and ranker.tree_weights_.shape == (30,)
    if boosting == "dart":
        assert np.any(ranker.tree_weights_ != ranker.learning_rate)


def test_group_and_qid_give_the_same_model(data):
    X, y, qid, Xt, _, _ = data
    _, sizes = np.unique(qid, return_counts=True)
    a = DartRanker(n_estimators=10, random_state=3).fit(X, y, qid=qid)
    b = DartRanker(n_estimators=10, random_state=3).fit(X, y, group=sizes)
    # string ids, not sorted, but contiguous
    names = np.array([f"q{9999 - q}" for q in qid])
    c = DartRanker(n_estimators=10, random_state=3).fit(X, y, qid=names)
    np.testing.assert_array_equal(a.predict(Xt), b.predict(Xt))
    np.testing.assert_array_equal(a.predict(Xt), c.predict(Xt))


def test_truncation_and_eval_at(data):
    X, y, qid, Xt, yt, qidt = data
    full = DartRanker(n_estimators=15, random_state=0, boosting="mart").fit(X, y, qid=qid)
    trunc = DartRanker(n_estimators=15, random_state=0, boosting="mart",
                       lambdarank_truncation_level=5, eval_at=5).fit(X, y, qid=qid)
    assert not np.array_equal(full.predict(Xt), trunc.predict(Xt))
    assert trunc.score(Xt, yt, qid=qidt) == pytest.approx(
        ndcg_score(yt, trunc.predict(Xt), qid=qidt, k=5))
    assert trunc.score(Xt, yt, qid=qidt) > 0.6


@pytest.mark.parametrize("kwargs, y_fn, match", [
    ({"qid": "shuffled"}, None, "not contiguous"),
    ({"group": "short"}, None, "sum to"),
    ({"group": "zero"}, None, "positive"),
    ({"group": "float"}, None, "integer"),
    ({}, None, "needs query groups"),
    ({"qid": "ok", "group": "ok"}, None, "not both"),
    ({"qid": "ok"}, lambda y: y - 1, "non-negative"),
    ({"qid": "ok"}, lambda y: np.c_[y, y], "1-D"),
    ({"qid": "short"}, None, "one entry per row"),
    ({"qid": "ok", "sample_weight": "per_row"}, None, "constant within each query"),
])
def test_bad_input(data, kwargs, y_fn, match):
    X, y, qid, _, _, _ = data
    _, sizes = np.unique(qid, return_counts=True)
    values = {
        ("qid", "ok"): qid, ("qid", "short"): qid[:-1],
        ("qid", "shuffled"): np.random.default_rng(0).permutation(qid),
        ("group", "ok"): sizes, ("group", "short"): sizes[:-1],
        ("group", "zero"): np.r_[sizes, 0], ("group", "float"): sizes + 0.5,
        ("sample_weight", "per_row"): np.arange(len(y), dtype=float) + 1,
    }
    fit_kwargs = {k: values[(k, v)] for k, v in kwargs.items()}
    yy = y if y_fn is None else y_fn(y)
    with pytest.raises(ValueError, match=match):
        DartRanker(n_estimators=2).fit(X, yy, **fit_kwargs)


def test_eval_set_needs_its_queries(data):
    X, y, qid, Xt, yt, qidt = data
    with pytest.raises(ValueError, match="eval_group= or eval_qid="):
        DartRanker(n_estimators=2).fit(X, y, qid=qid, eval_set=(Xt, yt))
    with pytest.raises(ValueError, match="sum to"):
        DartRanker(n_estimators=2).fit(X, y, qid=qid, eval_set=(Xt, yt), eval_group=[3, 4])


@pytest.mark.parametrize("boosting", ["dart", "mart"])
def test_early_stopping_on_validation_ndcg(data, boosting):
    X, y, qid, Xt, yt, qidt = data
    ranker = DartRanker(boosting=boosting, n_estimators=200, learning_rate=0.3,
                        n_iter_no_change=5, eval_at=5, random_state=0)
    ranker.fit(X, y, qid=qid, eval_set=(Xt, yt), eval_qid=qidt)
    assert ranker.n_iter_ < 200
    scores = np.asarray(ranker.validation_score_)
    assert ranker.n_iter_ == ranker.best_iteration_ == int(np.argmax(scores))
    # the kept model is the one that was scored, with the weights it had then
    assert ranker.score(Xt, yt, qid=qidt) == pytest.approx(scores.max(), abs=1e-12)
    staged = list(ranker.staged_predict(Xt))
    np.testing.assert_allclose(staged[-1], ranker.predict(Xt), rtol=1e-12, atol=1e-12)


def test_validation_split_takes_whole_queries(data):
    X, y, qid, _, _, _ = data
    ranker = DartRanker(n_estimators=5, early_stopping=True, validation_fraction=0.25,
                        random_state=0)
    seen = {}
    orig = DartRanker._validation_split

    def spy(self, *args):
        out = orig(self, *args)
        seen["train"], seen["val"] = out[1], out[4]
        return out

    DartRanker._validation_split = spy
    try:
        ranker.fit(X, y, qid=qid)
    finally:
        DartRanker._validation_split = orig
    n_queries = np.unique(qid).size
    tr, va = seen["train"], seen["val"]
    assert tr.n_queries + va.n_queries == n_queries
    assert va.n_queries == round(0.25 * n_queries)
    assert tr.n_samples + va.n_samples == len(y)
    assert len(ranker.validation_score_) == 6
    assert all(0 < s <= 1 for s in ranker.validation_score_)


def test_clone_pickle_and_model_state(data):
    X, y, qid, Xt, _, _ = data
    ranker = DartRanker(n_estimators=12, eval_at=3, lambdarank_truncation_level=8,
                        random_state=0).fit(X, y, qid=qid)
    c = clone(ranker)
    assert c.get_params() == ranker.get_params() and not hasattr(c, "booster_")
    p = pickle.loads(pickle.dumps(ranker))
    np.testing.assert_array_equal(p.predict(Xt), ranker.predict(Xt))
    header, arrays = ranker._get_state()
    assert header["class"] == "DartRanker"
    r2 = estimator_from_state(header, arrays)
    assert isinstance(r2, DartRanker) and r2.eval_at == 3
    np.testing.assert_array_equal(r2.predict(Xt), ranker.predict(Xt))


def test_warm_start_resume_matches_full_fit(data):
    X, y, qid, Xt, _, _ = data
    full = DartRanker(n_estimators=16, random_state=5).fit(X, y, qid=qid)
    part = DartRanker(n_estimators=8, random_state=5, warm_start=True).fit(X, y, qid=qid)
    part.set_params(n_estimators=16).fit(X, y, qid=qid)
    np.testing.assert_allclose(part.predict(Xt), full.predict(Xt), rtol=1e-12)


def test_group_kfold_cv_with_qid(data):
    X, y, qid, _, _, _ = data
    cv = GroupKFold(n_splits=3)
    ranker = DartRanker(n_estimators=8, random_state=0)
    manual = []
    for tr, te in cv.split(X, y, groups=qid):
        est = clone(ranker).fit(X[tr], y[tr], qid=qid[tr])
        manual.append(est.score(X[te], y[te], qid=qid[te]))
    with sklearn.config_context(enable_metadata_routing=True):
        routed = clone(ranker).set_fit_request(qid=True).set_score_request(qid=True)
        res = cross_validate(routed, X, y, cv=cv, params={"qid": qid, "groups": qid})
    np.testing.assert_allclose(res["test_score"], manual, rtol=1e-12)
    with pytest.raises(ValueError, match="pass group= or qid="):
        clone(ranker).fit(X, y, qid=qid).score(X, y)


def test_make_ranking_data_properties():
    X, y, qid = make_ranking_data(300, random_state=0)
    sizes = np.bincount(qid)
    assert sizes.min() >= 10 and sizes.max() <= 100 and X.shape == (len(y), 30)
    assert set(np.unique(y)) == {0, 1, 2, 3, 4}
    frac = np.bincount(y.astype(int)) / len(y)
    np.testing.assert_allclose(frac, [0.5, 0.25, 0.15, 0.07, 0.03], atol=0.01)
    X2, y2, _ = make_ranking_data(300, random_state=0)
    np.testing.assert_array_equal(X, X2)


def test_queries_without_pairs():
    rng = np.random.default_rng(0)
    X = rng.random((200, 3))
    qid = np.repeat(np.arange(10), 20)
    with pytest.raises(ValueError, match="different relevance grades"):
        DartRanker(n_estimators=2).fit(X, np.full(200, 2.0), qid=qid)
    # one informative query among constant ones; no leaf limits at all, so a
    # leaf may hold only rows without any pair (zero hessian)
    y = np.zeros(200)
    y[:20] = rng.integers(0, 3, 20)
    ranker = DartRanker(n_estimators=5, min_samples_leaf=1, min_child_weight=0.0,
                        random_state=0).fit(X, y, qid=qid)
    assert np.all(np.isfinite(ranker.predict(X)))

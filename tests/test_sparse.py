"""Sparse input: scipy CSR/CSC in fit and predict give exactly the model and
predictions of the same data dense (implicit zeros are the value 0.0)."""
import numpy as np
import pytest
import scipy.sparse as sp

from dartboost import DartClassifier, DartRegressor
from dartboost._binning import BinMapper


def _sparse_data(n=1500, p=40, density=0.08, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, p, density=density, format="csr", random_state=seed,
                  data_rvs=lambda k: rng.normal(size=k))
    X.data[rng.random(X.data.size) < 0.05] = np.nan  # stored missing values
    dense = X.toarray()
    w = rng.normal(size=p)
    y = np.nan_to_num(dense) @ w + rng.normal(scale=0.1, size=n)
    return X, dense, y


def _same_model(a, b):
    ha, aa = a._get_state()
    hb, ab = b._get_state()
    assert ha == hb
    for name in aa:
        np.testing.assert_array_equal(aa[name], ab[name], err_msg=name)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("boosting", ["dart", "mart"])
def test_sparse_and_dense_give_identical_models(fmt, boosting):
    X, dense, y = _sparse_data()
    kw = dict(boosting=boosting, n_estimators=15, random_state=0, early_stopping=True,
              n_iter_no_change=5)
    a = DartRegressor(**kw).fit(X.asformat(fmt), y)
    b = DartRegressor(**kw).fit(dense, y)
    _same_model(a, b)
    np.testing.assert_array_equal(a.predict(X.asformat(fmt)), b.predict(dense))
    np.testing.assert_array_equal(a.predict(X), a.predict(dense))
    np.testing.assert_array_equal(a.predict_leaf(X), a.predict_leaf(dense))
    for s1, s2 in zip(a.staged_predict(X[:50]), a.staged_predict(dense[:50])):
        np.testing.assert_array_equal(s1, s2)


def test_sparse_binning_matches_dense_and_categorical_codes():
    X, dense, _ = _sparse_data(n=800, p=10, seed=3)
    X = X.copy()
    X.data = np.round(np.abs(np.nan_to_num(X.data)) * 3)  # small integer labels
    dense = X.toarray()
    mask = np.zeros(10, dtype=bool)
    mask[:3] = True
    a = BinMapper(is_categorical=mask, random_state=0).fit(X)
    b = BinMapper(is_categorical=mask, random_state=0).fit(dense)
    for ta, tb in zip(a.bin_thresholds_, b.bin_thresholds_):
        np.testing.assert_array_equal(ta, tb)
    np.testing.assert_array_equal(a.transform(X.tocsc()), b.transform(dense))
    clf_kw = dict(n_estimators=8, random_state=0, categorical_features=[0, 1, 2],
                  min_data_per_group=10)
    y = (dense[:, 0] > 1).astype(int)
    _same_model(DartClassifier(**clf_kw).fit(X, y), DartClassifier(**clf_kw).fit(dense, y))


def test_sparse_prediction_runs_in_blocks(monkeypatch):
    from dartboost import _binning, _booster
    X, dense, y = _sparse_data(n=600, p=30)
    est = DartRegressor(n_estimators=5, random_state=0).fit(X, y)
    expected = est.predict(dense)
    monkeypatch.setattr(_binning, "SPARSE_BLOCK_BYTES", 8 * 30 * 7)  # 7 rows a block
    seen = []
    real = _booster.dense_blocks

    def spy(M):
        for start, stop, block in real(M):
            seen.append(block.shape[0])
            yield start, stop, block

    monkeypatch.setattr(_booster, "dense_blocks", spy)
    np.testing.assert_array_equal(est.predict(X), expected)
    assert max(seen) == 7 and sum(seen) == 600

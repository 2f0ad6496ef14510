"""Sparse binning straight from the columns, and the features a fit leaves out.

``BinMapper`` reads a CSC/CSR matrix's stored entries plus a count of its
implicit zeros (no dense float column, no dense matrix); ``transform_splittable``
bins only features that can split, and the fit maps trees back to the
original feature indices (``dartboost/_feature_map.py``).
"""
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from dartboost import DartClassifier, DartRegressor
from dartboost._binning import BinMapper


def _wide_sparse(n, p, seed=0, nan=True):
    """Mostly zero columns with negative, positive, explicit-zero, -0.0 and
    NaN entries; a few dense-ish columns with > 255 distinct values."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, p, density=0.05, format="csc", random_state=seed,
                  data_rvs=lambda k: rng.normal(size=k)).tolil()
    X[:, 0] = rng.normal(size=(n, 1)) * (rng.random((n, 1)) < 0.7)  # many distinct + zeros
    X[:, 1] = rng.integers(-3, 4, size=(n, 1)).astype(float)  # few distinct, zero among them
    X = X.tocsc()
    if nan:
        X.data[rng.random(X.data.size) < 0.03] = np.nan
    X.data[rng.random(X.data.size) < 0.02] = 0.0  # explicit zeros
    X.data[rng.random(X.data.size) < 0.01] = -0.0
    return X


@pytest.mark.parametrize("max_bins", [255, 16])
@pytest.mark.parametrize("subsample", [None, 700])
def test_sparse_thresholds_equal_dense_ones(max_bins, subsample):
    X = _wide_sparse(1500, 12)
    dense = X.toarray()
    kw = dict(max_bins=max_bins, subsample=subsample, random_state=0)
    a = BinMapper(**kw).fit(X.tocsr())
    b = BinMapper(**kw).fit(dense)
    for f, (ta, tb) in enumerate(zip(a.bin_thresholds_, b.bin_thresholds_)):
        np.testing.assert_array_equal(ta, tb, err_msg=f"feature {f}")
    assert a.bin_thresholds_[0].size > 10  # the quantile path was taken
    for fmt in ("csr", "csc"):
        np.testing.assert_array_equal(a.transform(X.asformat(fmt)), b.transform(dense))


def test_sparse_categorical_codes_count_the_implicit_zeros():
    # label 0 is the most frequent only through the implicit zeros: it must
    # be kept, as from the dense copy
    rng = np.random.default_rng(2)
    n = 2000
    codes = rng.integers(1, 600, size=n).astype(float)
    codes[rng.random(n) < 0.5] = 0.0
    X = sp.csc_matrix(codes[:, None])
    a = BinMapper(is_categorical=[True], random_state=0).fit(X)
    b = BinMapper(is_categorical=[True], random_state=0).fit(codes[:, None])
    np.testing.assert_array_equal(a.bin_thresholds_[0], b.bin_thresholds_[0])
    assert 0.0 in a.bin_thresholds_[0]
    np.testing.assert_array_equal(a.transform(X), b.transform(codes[:, None]))


def test_sparse_input_with_repeated_entries_is_summed_like_dense():
    # column 0 stores row 0 twice (1 + 2), column 1 row 3 twice (-1 + 4)
    data = np.array([1.0, 2.0, 0.5, 5.0, -1.0, 4.0])
    indices = np.array([0, 0, 4, 2, 3, 3], dtype=np.int32)
    dup = sp.csc_matrix((data, indices, np.array([0, 3, 6])), shape=(5, 2))
    assert not dup.has_canonical_format
    dense = dup.toarray()
    a = BinMapper(random_state=0).fit(dup)
    b = BinMapper(random_state=0).fit(dense)
    for ta, tb in zip(a.bin_thresholds_, b.bin_thresholds_):
        np.testing.assert_array_equal(ta, tb)
    np.testing.assert_array_equal(a.transform(dup), b.transform(dense))
    assert dup.nnz == 6  # the caller's matrix is left as it was


def test_transform_of_chosen_features_and_int64_indices():
    X = _wide_sparse(400, 9)
    dense = X.toarray()
    mapper = BinMapper(random_state=0).fit(dense)
    full = mapper.transform(dense)
    features = np.array([7, 0, 3])
    np.testing.assert_array_equal(mapper.transform(dense, features), full[:, features])
    X64 = sp.csc_matrix((X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64)),
                        shape=X.shape)
    np.testing.assert_array_equal(mapper.transform(X64, features), full[:, features])
    with pytest.raises(ValueError, match="features must be indices"):
        mapper.transform(dense, [9])
    with pytest.raises(ValueError, match="fitted on 9 features"):
        mapper.transform(dense[:, :4])


def test_transform_splittable_leaves_out_features_that_cannot_split():
    rng = np.random.default_rng(0)
    n = 300
    dense = np.zeros((n, 7))
    dense[:, 0] = rng.normal(size=n)  # splits
    dense[:, 1] = 3.0  # constant
    # column 2: all zero
    dense[:15, 3] = 1.0  # 15 rows off the zero bin: < min_rows=20
    dense[:25, 4] = rng.normal(size=25)  # 25 rows off the zero bin: can split
    dense[:, 5] = 1.0
    dense[:30, 5] = np.nan  # constant but missing in 30 rows: can split on missing
    dense[:, 6] = rng.integers(0, 2, size=n)  # categorical, two levels
    is_cat = np.zeros(7, dtype=bool)
    is_cat[6] = True
    for X in (dense, sp.csr_matrix(dense)):
        mapper = BinMapper(random_state=0, is_categorical=is_cat).fit(X)
        binned, features = mapper.transform_splittable(X, min_rows=20)
        np.testing.assert_array_equal(features, [0, 4, 5, 6])
        np.testing.assert_array_equal(binned, mapper.transform(X)[:, features])
        assert binned.flags.f_contiguous
        _, kept = mapper.transform_splittable(X, min_rows=20, keep=[2])
        np.testing.assert_array_equal(kept, [0, 2, 4, 5, 6])
        _, kept = mapper.transform_splittable(X, min_rows=1)
        np.testing.assert_array_equal(kept, [0, 3, 4, 5, 6])
    # nothing can split: one feature stays, so a fit still has a column
    const = np.ones((50, 3))
    _, kept = BinMapper().fit(const).transform_splittable(const, min_rows=1)
    np.testing.assert_array_equal(kept, [0])


def test_sparse_binning_memory_is_proportional_to_the_usable_features():
    # 4,000 x 12,000 with 2 entries a column: a dense uint8 matrix would be
    # 48 MB, a dense float column per feature 32 KB each; only the 50 dense
    # columns can split with min_samples_leaf=20
    rng = np.random.default_rng(0)
    n, p = 4000, 12_000
    rows = rng.integers(0, n, size=2 * (p - 50))
    cols = np.repeat(np.arange(p - 50), 2)
    rare = sp.csc_matrix((rng.random(rows.size) + 0.5, (rows, cols)), shape=(n, p - 50))
    X = sp.hstack([sp.csc_matrix(rng.normal(size=(n, 50))), rare], format="csc")
    tracemalloc.start()
    try:
        mapper = BinMapper(random_state=0, n_threads=1).fit(X)
        binned, features = mapper.transform_splittable(X, min_rows=20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(features, np.arange(50))
    assert binned.shape == (n, 50)
    assert peak < 12e6, f"peak {peak / 1e6:.1f} MB"


def _with_useless_columns(X):
    """``X`` with constant, all-zero and rare columns between its own; the
    position of each original column in the result."""
    n, p = X.shape
    junk = [np.full(n, 2.0), np.zeros(n), np.where(np.arange(n) < 5, 1.0, 0.0)]
    cols, where = [], []
    for j in range(p):
        cols.append(junk[j % 3])
        where.append(len(cols))
        cols.append(X[:, j])
    return np.column_stack(cols), np.array(where)


@pytest.mark.parametrize("boosting", ["dart", "mart"])
def test_useless_features_change_nothing_but_the_indices(boosting):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 5))
    y = X[:, 0] - 2 * X[:, 3] * (X[:, 1] > 0) + rng.normal(scale=0.1, size=600)
    wide, where = _with_useless_columns(X)
    kw = dict(boosting=boosting, n_estimators=12, random_state=0)
    a = DartRegressor(**kw).fit(X, y)
    b = DartRegressor(**kw).fit(wide, y)
    np.testing.assert_array_equal(a.predict(X), b.predict(wide))
    na, nb = a.booster_.nodes, b.booster_.nodes
    inner = na["is_leaf"] == 0
    np.testing.assert_array_equal(where[na["feature_idx"][inner]], nb["feature_idx"][inner])
    np.testing.assert_array_equal(na["num_threshold"], nb["num_threshold"])
    imp = b.feature_importances_
    assert np.all(imp[np.setdiff1d(np.arange(wide.shape[1]), where)] == 0)
    np.testing.assert_allclose(imp[where], a.feature_importances_)
    # the same through a sparse matrix and early stopping on a validation split
    kw.update(early_stopping=True, n_iter_no_change=3)
    c = DartRegressor(**kw).fit(sp.csr_matrix(wide), y)
    d = DartRegressor(**kw).fit(X, y)
    np.testing.assert_array_equal(c.predict(wide), d.predict(X))


def test_constraints_follow_the_original_feature_indices():
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, size=(800, 4))
    y = 2 * X[:, 0] + np.sin(3 * X[:, 1]) + X[:, 2] * X[:, 3] + rng.normal(scale=0.1, size=800)
    wide, where = _with_useless_columns(X)
    mono = np.zeros(wide.shape[1], dtype=int)
    mono[where[1]] = 1
    groups = [[int(where[0]), int(where[1]), 0], [int(where[2]), int(where[3]), 2]]
    kw = dict(n_estimators=15, random_state=0)
    a = DartRegressor(monotonic_cst=mono[where], interaction_cst=[[0, 1], [2, 3]], **kw).fit(X, y)
    b = DartRegressor(monotonic_cst=mono, interaction_cst=groups, **kw).fit(wide, y)
    np.testing.assert_array_equal(a.predict(X), b.predict(wide))
    grid = np.tile(wide[:1], (50, 1))
    grid[:, where[1]] = np.linspace(-1, 1, 50)
    assert np.all(np.diff(b.predict(grid)) >= 0)


def test_warm_start_keeps_features_the_model_already_splits_on():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(500, 3))
    y = X[:, 0] + X[:, 1]
    est = DartRegressor(boosting="mart", n_estimators=5, warm_start=True, random_state=0)
    est.fit(X, y)
    assert 1 in est.booster_.nodes["feature_idx"][est.booster_.nodes["is_leaf"] == 0]
    X2 = X.copy()
    X2[:, 1] = 0.0  # feature 1 cannot split in the new data, yet old trees use it
    est.set_params(n_estimators=10)
    est.fit(X2, y)
    full = DartRegressor(boosting="mart", n_estimators=5, random_state=0).fit(X, y)
    # the first five trees are the old ones, scored on the new rows
    np.testing.assert_array_equal(est.booster_.tree(0), full.booster_.tree(0))
    assert np.isfinite(est.predict(X2)).all()


def test_classifier_on_a_wide_sparse_matrix_uses_only_original_indices():
    rng = np.random.default_rng(5)
    n, p = 400, 3000
    X = sp.random(n, p, density=0.002, format="csr", random_state=5)
    signal = rng.normal(size=n)
    X = sp.hstack([X, sp.csr_matrix(signal[:, None])]).tocsr()
    y = (signal > 0).astype(int)
    clf = DartClassifier(n_estimators=5, random_state=0).fit(X, y)
    inner = clf.booster_.nodes["is_leaf"] == 0
    assert set(clf.booster_.nodes["feature_idx"][inner]) == {p}
    assert clf.score(X, y) > 0.95
    np.testing.assert_array_equal(clf.predict(X), clf.predict(X.toarray()))


def test_sparse_arrays_are_accepted_like_matrices():
    X = _wide_sparse(500, 6, nan=False)
    y = np.asarray(X[:, 0].todense()).ravel() + np.asarray(X[:, 1].todense()).ravel()
    a = DartRegressor(n_estimators=5, random_state=0).fit(sp.csr_array(X), y)
    b = DartRegressor(n_estimators=5, random_state=0).fit(X.toarray(), y)
    np.testing.assert_array_equal(a.predict(sp.csc_array(X)), b.predict(X.toarray()))


def test_fit_on_a_wide_sparse_matrix_allocates_for_the_usable_features_only():
    # a dense uint8 matrix of all 12,000 features would be 48 MB and one
    # histogram of them 61 MB; 50 usable features need a few MB on top of
    # the grower's fixed 16 MiB of partial-histogram scratch
    rng = np.random.default_rng(1)
    n, p = 4000, 12_000
    rows = rng.integers(0, n, size=3 * (p - 50))
    cols = np.repeat(np.arange(p - 50), 3)
    rare = sp.csc_matrix((rng.random(rows.size) + 0.5, (rows, cols)), shape=(n, p - 50))
    dense_part = rng.normal(size=(n, 50))
    X = sp.hstack([rare, sp.csr_matrix(dense_part)], format="csr")
    y = dense_part[:, 0] + dense_part[:, 1] ** 2
    tracemalloc.start()
    try:
        est = DartRegressor(n_estimators=5, random_state=0, n_jobs=1).fit(X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40e6, f"peak {peak / 1e6:.1f} MB"
    inner = est.booster_.nodes["is_leaf"] == 0
    assert est.booster_.nodes["feature_idx"][inner].min() >= p - 50

"""A binned training matrix kept as dense columns plus entries
(``dartboost._sparse_columns.SparseBinned``): binned straight from CSR/CSC
input (``BinMapper.transform_compact``, ``_binning.entries_csc``), the row
partition from entries (``_grow.NodeKernels`` with ``dense_features``),
traversal from entries (``_predictor.tree_leaf_ids_split`` /
``add_tree_split``), and fits whose memory follows the non-zeros."""
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from dartboost import DartClassifier, DartRegressor, _boosting
from dartboost._binning import BinMapper
from dartboost._cext import _grow, _predictor, _splitting
from dartboost._common import HISTOGRAM_DTYPE
from dartboost._grower import GrowerBuffers, TreeGrower, histogram_offsets
from dartboost._scores import leaf_layout
from dartboost._sparse_columns import SparseBinned, SparseColumns


def _mixed(n=3000, seed=0):
    """Two dense columns; mostly-zero ones (with NaN, explicit zeros, -0.0);
    one mostly 3 (its zeros are entries); one mostly missing; one 30% non-zero
    (dense); one categorical, mostly label 0."""
    rng = np.random.default_rng(seed)
    cols = [rng.normal(size=n), rng.integers(0, 40, n).astype(float)]
    for k in range(4):
        col = np.zeros(n)
        on = rng.random(n) < 0.05
        col[on] = rng.normal(size=on.sum()) + k
        col[on & (rng.random(n) < 0.1)] = np.nan
        col[on & (rng.random(n) < 0.05)] = -0.0
        cols.append(col)
    three = np.full(n, 3.0)
    on = rng.random(n) < 0.06
    three[on] = rng.integers(0, 7, on.sum())
    cols.append(three)
    missing = np.full(n, np.nan)
    on = rng.random(n) < 0.07
    missing[on] = rng.normal(size=on.sum())
    cols.append(missing)
    cols.append(np.where(rng.random(n) < 0.3, rng.normal(size=n), 0.0))
    cat = np.where(rng.random(n) < 0.08, rng.integers(1, 6, n), 0).astype(float)
    cols.append(cat)
    X = np.column_stack(cols)
    signal = (X[:, 0] + np.nan_to_num(X[:, 2]) + (X[:, 6] == 3) - np.isnan(X[:, 7])
              + 2 * np.isin(X[:, 9], [2, 4]))
    return X, signal


def _csc_with_stored_zeros(X):
    """A CSC copy of ``X`` that also stores some explicit zeros."""
    csc = sp.csc_matrix(X)
    csc.data[::53] = np.where(np.isnan(csc.data[::53]), np.nan, 0.0)
    return csc, csc.toarray()


CATEGORICAL = np.array([False] * 9 + [True])


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_input_is_binned_into_the_dense_copy_s_entries(fmt):
    X, _ = _mixed()
    csc, dense = _csc_with_stored_zeros(X)
    mapper = BinMapper(random_state=0, is_categorical=CATEGORICAL).fit(dense)
    features = np.arange(X.shape[1])
    offsets = histogram_offsets(mapper.n_bins_non_missing_)
    a = mapper.transform_compact(dense, features, offsets)
    b = mapper.transform_compact(csc.asformat(fmt), features, offsets)
    assert isinstance(a, SparseBinned) and isinstance(b, SparseBinned)
    # the dense part holds the dense features only: 0, 1 and the 30% one
    np.testing.assert_array_equal(b.dense_features, [0, 1, 8])
    assert b.dense.shape == (X.shape[0], 3) and b.dense.flags.f_contiguous
    for name in ("dense", "dense_features", "column_of", "default_bin"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("is_sparse", "default_record", "row_ptr", "records"):
        np.testing.assert_array_equal(getattr(a.columns, name), getattr(b.columns, name),
                                      err_msg=name)
    full = mapper.transform(dense)
    np.testing.assert_array_equal(b.toarray(), full)
    reference = SparseColumns(full, offsets)  # the rule on the whole binned matrix
    np.testing.assert_array_equal(b.columns.is_sparse, reference.is_sparse)
    np.testing.assert_array_equal(b.columns.records, reference.records)
    # the mostly-missing feature defaults to the missing code, the mostly-3
    # one to the bin of 3.0 (its zeros are entries)
    assert b.default_bin[7] == 255
    assert b.default_bin[6] == np.bincount(full[:, 6]).argmax() != full[X[:, 6] == 0, 6][0]
    # a subset of the features, in a layout of their own
    sub = np.array([1, 3, 6, 9])
    c = mapper.transform_compact(csc.asformat(fmt), sub,
                                 histogram_offsets(mapper.n_bins_non_missing_[sub]))
    np.testing.assert_array_equal(c.toarray(), full[:, sub])


def test_a_table_without_mostly_default_features_stays_one_array():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 4))
    mapper = BinMapper(random_state=0).fit(X)
    offsets = histogram_offsets(mapper.n_bins_non_missing_)
    for data in (X, sp.csr_matrix(X)):
        out = mapper.transform_compact(data, np.arange(4), offsets)
        assert isinstance(out, np.ndarray) and out.shape == (500, 4)
        np.testing.assert_array_equal(out, mapper.transform(X))
    with pytest.raises(ValueError, match="offsets"):
        mapper.transform_compact(X, np.arange(4), offsets[:-1])


def _kernels(sb, g, h, buffers, n_bins):
    offsets = sb.offsets
    return _grow.NodeKernels(
        sb.dense, None, g, h, buffers.partition, buffers.left, buffers.right,
        np.empty((1, offsets[-1]), HISTOGRAM_DTYPE), np.ones(sb.shape[1], np.uint8),
        n_bins, 255, 1.0, 20, 1e-3, 0.0, offsets=offsets, sparse=sb.columns,
        dense_features=sb.dense_features)


@pytest.mark.parametrize("order", ["ascending", "shuffled"])
@pytest.mark.parametrize("lists", [True, False])
def test_the_partition_from_entries_equals_the_dense_one(order, lists):
    # column lists walked along the rows (galloping in small nodes, a new
    # search for a row out of order), or each row's entries searched
    X, _ = _mixed(n=2000, seed=3)
    mapper = BinMapper(random_state=0).fit(X)
    offsets = histogram_offsets(mapper.n_bins_non_missing_)
    full = mapper.transform(X)
    sb = SparseBinned.compact(full, offsets, 255)
    if not lists:
        del sb.columns.col_ptr, sb.columns.col_rows
    n = X.shape[0]
    g = np.zeros(n, np.float32)
    rng = np.random.default_rng(0)
    buffers = GrowerBuffers(n)
    kernels = _kernels(sb, g, g, buffers, mapper.n_bins_non_missing_)
    left, right = np.empty(n, np.uint32), np.empty(n, np.uint32)
    for f in range(X.shape[1]):
        for size in (1500, 40, 1):
            rows = np.sort(rng.choice(n, size, replace=False)).astype(np.uint32)
            if order == "shuffled":
                rng.shuffle(rows)
            threshold = int(rng.integers(0, mapper.n_bins_non_missing_[f]))
            missing_left = bool(rng.integers(2))
            bitset = None
            if rng.random() < 0.3:
                bitset = rng.integers(0, 2**32, 8, dtype=np.uint64).astype(np.uint32)
            expected = rows.copy()
            n_left = _splitting.split_indices(full, expected, f, threshold, missing_left, 255,
                                              left, right, 1, bitset)
            buffers.partition[:rows.size] = rows
            found = kernels.split(0, rows.size, f, threshold, missing_left, bitset, None,
                                  None, None, True, 0., 0., -np.inf, np.inf, None, 0., 0.,
                                  -np.inf, np.inf, None, -1)[0]
            assert found == n_left, f
            np.testing.assert_array_equal(buffers.partition[:rows.size], expected)


def test_kernels_refuse_a_matrix_without_a_feature():
    X, _ = _mixed(n=500)
    mapper = BinMapper(random_state=0).fit(X)
    offsets = histogram_offsets(mapper.n_bins_non_missing_)
    sb = SparseBinned.compact(mapper.transform(X), offsets, 255)
    g = np.zeros(500, np.float32)
    buffers = GrowerBuffers(500)
    bad = SparseBinned.__new__(SparseBinned)
    bad.__dict__.update(sb.__dict__)
    bad.dense, bad.dense_features = sb.dense[:, :2], sb.dense_features[:2]
    with pytest.raises(ValueError, match="lacks a feature"):
        _kernels(bad, g, g, buffers, mapper.n_bins_non_missing_)
    bad.dense_features = sb.dense_features[:2][::-1].copy()
    with pytest.raises(ValueError, match="increasing"):
        _kernels(bad, g, g, buffers, mapper.n_bins_non_missing_)
    with pytest.raises(ValueError, match="exactly the features"):
        SparseBinned(sb.dense[:, :2], sb.dense_features[:2], sb.columns, offsets, 255)


def test_traversal_from_entries_equals_the_dense_one():
    X, signal = _mixed(n=4000, seed=4)
    mapper = BinMapper(random_state=0, is_categorical=CATEGORICAL).fit(X)
    offsets = histogram_offsets(mapper.n_bins_non_missing_)
    full = mapper.transform(X)
    sb = SparseBinned.compact(full, offsets, 255)
    rng = np.random.default_rng(2)
    g = (rng.normal(size=4000) - signal).astype(np.float32)
    h = np.ones(4000, np.float32)
    grower = TreeGrower(full, g, h, mapper.n_bins_non_missing_, 255, max_leaf_nodes=40,
                        min_samples_leaf=5, is_categorical=mapper.is_categorical_)
    nodes, _ = grower.grow()
    assert set(nodes["feature_idx"][nodes["is_leaf"] == 0]) & {2, 6, 7, 9}
    tables = {"is_categorical": mapper.is_categorical_,
              "cat_bitsets": np.ascontiguousarray(grower.cat_bitsets.reshape(-1))}
    node_to_leaf, _ = leaf_layout(nodes)
    expected = np.empty(4000, np.uint8)
    _predictor.tree_leaf_ids_binned(nodes, full, 255, node_to_leaf, 2, expected, **tables)
    args = (sb.dense, sb.column_of, *sb.entry_tables(), 255)
    got = np.empty(4000, np.uint8)
    _predictor.tree_leaf_ids_split(nodes, *args, node_to_leaf, 2, got, **tables)
    np.testing.assert_array_equal(got, expected)
    a, b = np.ones(4000), np.ones(4000)
    _predictor.add_tree_binned(nodes, full, 255, 0.5, 2, a, **tables)
    _predictor.add_tree_split(nodes, *args, 0.5, 2, b, **tables)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="one entry per row"):
        _predictor.add_tree_split(nodes, *args, 0.5, 2, b[:-1], **tables)


@pytest.mark.parametrize("params", [dict(), dict(colsample_bynode=0.5, rng_seed=1),
                                    dict(sample_indices="half"), dict(step_by_step=True)])
def test_trees_grown_on_entries_equal_the_whole_matrix_s(params):
    X, signal = _mixed(n=20_000, seed=5)
    mapper = BinMapper(random_state=0, is_categorical=CATEGORICAL).fit(X)
    offsets = histogram_offsets(mapper.n_bins_non_missing_)
    full = mapper.transform(X)
    sb = SparseBinned.compact(full, offsets, 255)
    rng = np.random.default_rng(0)
    g = (rng.normal(size=X.shape[0]) - signal).astype(np.float32)
    h = rng.uniform(0.5, 1.5, X.shape[0]).astype(np.float32)
    params = dict(params)
    if params.pop("sample_indices", None):
        params["sample_indices"] = np.arange(0, X.shape[0], 2, dtype=np.uint32)
    step = params.pop("step_by_step", False)

    class Step(TreeGrower):  # a subclass step: the step-by-step path
        def _build_hist(self, node):
            return super()._build_hist(node)

    def grow(data, n_threads):
        kw = dict(params)
        seed = kw.pop("rng_seed", None)
        if seed is not None:
            kw["rng"] = np.random.default_rng(seed)
        cls = Step if step and data is sb else TreeGrower
        grower = cls(data, g, h, mapper.n_bins_non_missing_, 255, max_leaf_nodes=31,
                     min_samples_leaf=10, n_threads=n_threads,
                     is_categorical=mapper.is_categorical_, buffers=GrowerBuffers(len(g)),
                     **kw)
        return grower.grow(), grower.cat_bitsets

    (ref_nodes, ref_leaves), ref_bits = grow(full, 2)
    for n_threads in (1, 2):
        (nodes, leaves), bits = grow(sb, n_threads)
        np.testing.assert_array_equal(nodes, ref_nodes)
        assert leaves == ref_leaves
        np.testing.assert_array_equal(bits, ref_bits)
    used = set(ref_nodes["feature_idx"][ref_nodes["is_leaf"] == 0])
    assert used & {2, 3, 6, 7, 9} and used & {0, 1}


def _fit_binned(monkeypatch):
    """Record the binned training and validation matrices the fits use."""
    seen = []
    init = _boosting.ScoreKeeper.__init__

    def spy(self, X_binned, *args, **kwargs):
        seen.append(X_binned)
        init(self, X_binned, *args, **kwargs)

    monkeypatch.setattr(_boosting.ScoreKeeper, "__init__", spy)
    return seen


def _bag_of_words(n, p, seed=0):
    """A wide CSR matrix: most words in 0.5% of the rows, a few dense columns;
    values of a handful of distinct levels (small histograms)."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, p, density=0.005, format="csr", random_state=seed,
                  data_rvs=lambda k: rng.integers(1, 4, k).astype(float))
    dense = rng.normal(size=(n, 3))
    X = sp.hstack([X, sp.csr_matrix(dense)]).tocsr()
    y = dense[:, 0] + (X[:, 0].toarray().ravel() > 0) + rng.normal(scale=0.1, size=n)
    return X, y


def test_a_sparse_fit_holds_no_rows_by_features_matrix(monkeypatch):
    seen = _fit_binned(monkeypatch)
    n, p = 20_000, 4000
    X, y = _bag_of_words(n, p)
    est = DartRegressor(n_estimators=2, max_leaf_nodes=4, min_samples_leaf=20,
                        random_state=0, early_stopping=False, n_jobs=1)
    tracemalloc.start()
    try:
        est.fit(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    train = seen[0]
    assert isinstance(train, SparseBinned)
    n_dense = int((train.columns.is_sparse == 0).sum())
    assert n_dense == 3  # the dense columns only
    assert train.dense.shape == (n, n_dense)
    n_used = train.shape[1]
    assert n_used > 3000  # most words are in >= 20 rows: they are used
    # its bytes follow the rows and the non-zeros, not rows x features
    # (per row a pointer; per entry a record and its row; per feature a few words)
    assert train.nbytes <= 8 * (n + 1) + 8 * X.nnz + n * n_dense + 24 * (n_used + 1)
    assert train.nbytes < n * n_used / 20
    # and so does the whole fit's peak (the old binned matrix alone: n x n_used)
    assert peak < n * n_used / 4, (peak, n * n_used)


@pytest.mark.parametrize("boosting", ["mart", "dart"])
def test_sparse_and_dense_copies_give_identical_models(boosting, monkeypatch):
    seen = _fit_binned(monkeypatch)
    X, signal = _mixed(n=4000, seed=6)
    y = (signal + np.random.default_rng(0).normal(size=4000) > 1).astype(int)
    X_val, s_val = _mixed(n=1500, seed=7)
    y_val = (s_val > 1).astype(int)
    models = []
    for fmt in (None, "csr", "csc"):
        conv = (lambda a: a) if fmt is None else (lambda a: sp.csr_matrix(a).asformat(fmt))
        est = DartClassifier(boosting=boosting, n_estimators=25, random_state=0,
                             categorical_features=[9], early_stopping=True,
                             n_iter_no_change=3, n_jobs=2, subsample=0.8)
        models.append(est.fit(conv(X), y, eval_set=[(conv(X_val), y_val)]))
    # the training and the validation sets are kept as entries, every fit
    assert len(seen) == 6 and all(isinstance(b, SparseBinned) for b in seen)
    a = models[0]
    assert set(a.booster_.nodes["feature_idx"][a.booster_.nodes["is_leaf"] == 0]) & {2, 6, 9}
    for other in models[1:]:
        np.testing.assert_array_equal(a.booster_.nodes, other.booster_.nodes)
        assert a.n_iter_ == other.n_iter_
        assert a.validation_score_ == other.validation_score_
        np.testing.assert_array_equal(a.predict_proba(X_val), other.predict_proba(X_val))


def test_entries_change_no_model(monkeypatch):
    # the model of a fit on entries is the one the whole binned matrix grows
    X, signal = _mixed(n=5000, seed=8)
    kw = dict(n_estimators=12, random_state=0, early_stopping=False, n_jobs=2,
              categorical_features=[9], boosting="dart")
    a = DartRegressor(**kw).fit(sp.csr_matrix(X), signal)
    monkeypatch.setattr(SparseBinned, "compact",
                        classmethod(lambda cls, X_binned, *args: X_binned))
    monkeypatch.setattr(_boosting.BinMapper, "transform_compact",
                        lambda self, X, features, offsets, _largest=None:
                        self.transform(X, features))
    b = DartRegressor(**kw).fit(X, signal)
    np.testing.assert_array_equal(a.booster_.nodes, b.booster_.nodes)


@pytest.mark.parametrize("n_dense", [0, 1])
def test_a_matrix_of_entries_only_or_one_dense_column(n_dense, monkeypatch):
    seen = _fit_binned(monkeypatch)
    rng = np.random.default_rng(9)
    n = 3000
    X = sp.random(n, 40, density=0.06, format="csr", random_state=1,
                  data_rvs=lambda k: rng.integers(1, 5, k).astype(float)).toarray()
    if n_dense:
        X[:, 5] = rng.normal(size=n)
    y = X[:, 0] - X[:, 1] + X[:, 5] + rng.normal(scale=0.1, size=n)
    kw = dict(boosting="dart", n_estimators=10, random_state=0, early_stopping=False,
              n_jobs=2, min_samples_leaf=5)
    a = DartRegressor(**kw).fit(sp.csr_matrix(X), y, eval_set=[(sp.csr_matrix(X[:500]),
                                                                 y[:500])])
    b = DartRegressor(**kw).fit(X, y, eval_set=[(X[:500], y[:500])])
    assert seen[0].dense.shape == (n, n_dense)
    np.testing.assert_array_equal(a.booster_.nodes, b.booster_.nodes)
    assert a.evals_result_ == b.evals_result_

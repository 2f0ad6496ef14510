"""Mostly-default features filled from their entries (``dartboost/_sparse_columns.py``
and the sparse tasks of ``_cext/_hist_fill.pxi``): the choice of features, the
entries, histograms against brute force, trees against the all-dense fill, and
identical models from a dense and a sparse copy of the data."""
import numpy as np
import pytest
import scipy.sparse as sp
from kernel_data import naive_histogram

from dartboost import _sparse_columns
from dartboost._binning import BinMapper
from dartboost._cext import _grow, _histogram
from dartboost._common import HISTOGRAM_DTYPE
from dartboost._grower import GrowerBuffers, TreeGrower, histogram_offsets
from dartboost._sparse_columns import SparseColumns


def _mostly_default(n=6000, seed=0):
    """Features: 2 dense normals; mostly-zero ones (5% non-zero, some NaN);
    one mostly 3 (a default bin that is not the first); one mostly missing;
    a binary one at 4%; one at 30% non-zero (not mostly default)."""
    rng = np.random.default_rng(seed)
    cols = [rng.normal(size=n), rng.normal(size=n)]
    for k in range(5):
        col = np.zeros(n)
        on = rng.random(n) < 0.05
        col[on] = rng.normal(size=on.sum()) + k
        col[on & (rng.random(n) < 0.1)] = np.nan
        cols.append(col)
    mostly_three = np.full(n, 3.0)
    on = rng.random(n) < 0.06
    mostly_three[on] = rng.integers(0, 7, on.sum())
    cols.append(mostly_three)
    mostly_missing = np.full(n, np.nan)
    on = rng.random(n) < 0.07
    mostly_missing[on] = rng.normal(size=on.sum())
    cols.append(mostly_missing)
    cols.append((rng.random(n) < 0.04).astype(float))
    thirty = np.where(rng.random(n) < 0.3, rng.normal(size=n), 0.0)
    cols.append(thirty)
    X = np.column_stack(cols)
    signal = np.nan_to_num(X[:, 2]) + (X[:, 7] == 3) - 0.5 * np.isnan(X[:, 8]) + X[:, 0]
    g = (signal - signal.mean() + rng.normal(scale=0.5, size=n)).astype(np.float32)
    h = rng.uniform(0.5, 1.5, n).astype(np.float32)
    mapper = BinMapper(random_state=0).fit(X)
    return X, mapper, mapper.transform(X), g, h


SPARSE = [2, 3, 4, 5, 6, 7, 8, 9]


def test_mostly_default_features_and_their_entries():
    _, mapper, binned, _, _ = _mostly_default()
    offsets = histogram_offsets(mapper.n_bins_non_missing_)
    columns = SparseColumns(binned, offsets)
    np.testing.assert_array_equal(np.flatnonzero(columns.is_sparse), SPARSE)
    last = offsets[1:] - 1
    for f in SPARSE:
        counts = np.bincount(binned[:, f], minlength=256)
        default = int(np.argmax(counts))
        assert columns.default_record[f] == offsets[f] + min(default, last[f] - offsets[f])
    assert columns.default_record[8] == last[8]  # mostly missing: the missing record
    # the entries: row by row, every non-default (row, feature) once, its record
    expected = [[offsets[f] + min(binned[r, f], last[f] - offsets[f]) for f in SPARSE
                 if offsets[f] + min(binned[r, f], last[f] - offsets[f])
                 != columns.default_record[f]] for r in range(binned.shape[0])]
    got = [list(columns.records[columns.row_ptr[r]:columns.row_ptr[r + 1]])
           for r in range(binned.shape[0])]
    assert got == expected
    assert SparseColumns.of(binned[:, :2].copy(order="F"), offsets[:3]) is None


def _check(hist, ref, offsets, nb, features, exact_counts=True):
    for f in features:
        mine = hist[offsets[f]:offsets[f + 1]]
        theirs = np.r_[ref[f, :nb[f]], ref[f, 255:]]
        np.testing.assert_array_equal(mine["count"], theirs["count"])
        for field in ("sum_gradients", "sum_hessians"):
            np.testing.assert_allclose(mine[field], theirs[field], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("hessians_are_constant", [False, True])
@pytest.mark.parametrize("n_rows", [700, 3 * _histogram.ROWS_PER_CHUNK + 55])
def test_sparse_filled_histograms_equal_brute_force(hessians_are_constant, n_rows):
    X, mapper, binned, g, h = _mostly_default(n=4 * _histogram.ROWS_PER_CHUNK)
    if hessians_are_constant:
        h = np.full_like(h, 0.75)
    nb = mapper.n_bins_non_missing_
    offsets = histogram_offsets(nb)
    columns = SparseColumns(binned, offsets)
    rows = np.sort(np.random.default_rng(3).choice(binned.shape[0], n_rows,
                                                   replace=False)).astype(np.uint32)
    mask = np.ones(binned.shape[1], np.uint8)
    mask[[1, 4]] = 0  # a dense and a sparse feature left out
    on = np.flatnonzero(mask)
    ref = naive_histogram(binned, rows, g.astype(np.float64), h.astype(np.float64), 256)
    partial = np.empty((64, offsets[-1]), HISTOGRAM_DTYPE)
    results = []
    for n_threads, scratch, X_rows in ((1, partial, None), (2, partial, None),
                                       (3, partial, np.ascontiguousarray(binned)),
                                       (2, None, None)):
        hist = np.zeros(offsets[-1], HISTOGRAM_DTYPE)
        hist["count"][offsets[4]:offsets[5]] = 7  # a masked feature is left untouched
        _histogram.build_histogram(binned, rows, g, h, mask, False, hessians_are_constant,
                                   n_threads, hist, scratch, X_rows, offsets=offsets,
                                   sparse=columns)
        _check(hist, ref, offsets, nb, on)
        assert np.all(hist["count"][offsets[4]:offsets[5]] == 7)
        results.append(hist)
    for other in results[1:3]:  # the same chunks: the same bits for any thread count
        np.testing.assert_array_equal(results[0], other)
    # the subtraction trick on top of them
    parent = np.empty_like(results[0])
    _histogram.build_histogram(binned, np.arange(binned.shape[0], dtype=np.uint32), g, h,
                               mask, True, hessians_are_constant, 2, parent, partial,
                               offsets=offsets, sparse=columns)
    rest = np.setdiff1d(np.arange(binned.shape[0]), rows).astype(np.uint32)
    sub = np.empty_like(parent)
    _histogram.subtract_histograms(parent, results[0], mask, 2, sub, offsets=offsets)
    ref_rest = naive_histogram(binned, rest, g.astype(np.float64), h.astype(np.float64), 256)
    for f in on:
        np.testing.assert_array_equal(sub["count"][offsets[f]:offsets[f + 1]],
                                      np.r_[ref_rest["count"][f, :nb[f]],
                                            ref_rest["count"][f, 255:]])


def test_an_empty_default_bin_has_exact_zero_sums():
    # a node whose rows all hold non-default values of a sparse feature:
    # its default bin is empty, with sums exactly 0 (not rounding residues)
    X, mapper, binned, g, h = _mostly_default()
    offsets = histogram_offsets(mapper.n_bins_non_missing_)
    columns = SparseColumns(binned, offsets)
    d = columns.default_record[2]
    rows = np.flatnonzero(binned[:, 2] != binned[:, 2][np.argmax(
        np.bincount(binned[:, 2]))]).astype(np.uint32)
    hist = np.empty(offsets[-1], HISTOGRAM_DTYPE)
    _histogram.build_histogram(binned, rows, g, h, np.ones(binned.shape[1], np.uint8), False,
                               False, 1, hist, offsets=offsets, sparse=columns)
    assert hist[d]["count"] == 0
    assert hist[d]["sum_gradients"] == 0.0 and hist[d]["sum_hessians"] == 0.0


def test_bad_sparse_columns_are_refused():
    X, mapper, binned, g, h = _mostly_default(n=500)
    offsets = histogram_offsets(mapper.n_bins_non_missing_)
    rows = np.arange(500, dtype=np.uint32)
    mask = np.ones(binned.shape[1], np.uint8)
    hist = np.empty(offsets[-1], HISTOGRAM_DTYPE)

    def build(columns):
        _histogram.build_histogram(binned, rows, g, h, mask, True, False, 1, hist,
                                   offsets=offsets, sparse=columns)

    good = SparseColumns(binned, offsets)
    bad = SparseColumns(binned, offsets)
    bad.records = bad.records.copy()
    bad.records[0] = offsets[-1]
    with pytest.raises(ValueError, match="past the histogram"):
        build(bad)
    bad = SparseColumns(binned, offsets)
    bad.row_ptr = bad.row_ptr[:-1]
    with pytest.raises(ValueError, match="row_ptr"):
        build(bad)
    bad = SparseColumns(binned, offsets)
    bad.default_record = bad.default_record.copy()
    bad.default_record[2] = offsets[3]
    with pytest.raises(ValueError, match="default record"):
        build(bad)
    build(good)


def _tree(cls, binned, mapper, g, h, n_threads, **params):
    grower = cls(binned, g, h, mapper.n_bins_non_missing_, mapper.missing_values_bin_idx_,
                 bin_thresholds=mapper.bin_thresholds_, n_threads=n_threads, **params)
    nodes, leaves = grower.grow()
    return grower, nodes, leaves


class StepByStepGrower(TreeGrower):
    def _build_hist(self, node):
        return super()._build_hist(node)


@pytest.mark.parametrize("params", [dict(), dict(hessians_are_constant=True),
                                    dict(colsample_bynode=0.5, rng_seed=1),
                                    dict(sample_indices="half")])
def test_sparse_filled_trees_match_the_dense_fill_and_every_path(params, monkeypatch):
    X, mapper, binned, g, h = _mostly_default(n=40_000, seed=2)
    params = dict(params, max_leaf_nodes=31, min_samples_leaf=10)
    if params.get("hessians_are_constant"):
        h = np.full_like(h, 0.5)
    if params.pop("sample_indices", None):
        params["sample_indices"] = np.arange(0, 40_000, 2, dtype=np.uint32)

    def grow(cls, n_threads):
        kwargs = dict(params)
        seed = kwargs.pop("rng_seed", None)
        if seed is not None:
            kwargs["rng"] = np.random.default_rng(seed)
        return _tree(cls, binned, mapper, g, h, n_threads, buffers=GrowerBuffers(40_000),
                     **kwargs)

    fused = [grow(TreeGrower, n) for n in (1, 2, 3)]
    assert fused[0][0].sparse is not None
    assert fused[0][0].sparse.n_sparse == len(SPARSE)
    # the row-major copy holds the other features only
    assert fused[0][0].buffers._rows.shape == (40_000, binned.shape[1] - len(SPARSE))
    try:
        _grow.set_layout(row_major_below=1)  # every node below the root reads it
        fused.append(grow(TreeGrower, 2))
    finally:
        _grow.set_layout()
    for other in fused[1:] + [grow(StepByStepGrower, 2)]:
        np.testing.assert_array_equal(fused[0][1], other[1])  # bit for bit
        assert fused[0][2] == other[2]
    # against the all-dense fill: only the default bins' rounding differs
    monkeypatch.setattr(_sparse_columns, "MAX_NON_DEFAULT_FRACTION", -1.0)
    dense = grow(TreeGrower, 2)
    assert dense[0].sparse is None
    a, b = fused[0][1], dense[1]
    for field in ("feature_idx", "bin_threshold", "count", "is_leaf", "left", "right",
                  "missing_go_to_left"):
        np.testing.assert_array_equal(a[field], b[field])
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a["gain"], b["gain"], rtol=1e-7, atol=1e-9)
    used = set(a["feature_idx"][a["is_leaf"] == 0])
    assert used & set(SPARSE) and used & {0, 1}  # both kinds of features split


@pytest.mark.parametrize("boosting", ["mart", "dart"])
def test_dense_and_sparse_copies_give_identical_models(boosting):
    # the choice of sparse features is made on the binned values, which a
    # dense and a CSR/CSC copy share: the same model, bit for bit
    from dartboost import DartClassifier
    X, _, _, g, _ = _mostly_default(n=5000, seed=5)
    X = np.nan_to_num(X)  # (scipy keeps NaN as a stored value either way)
    y = (g > 0).astype(int)
    models = [DartClassifier(boosting=boosting, n_estimators=15, random_state=0,
                             early_stopping=False, n_jobs=2).fit(data, y)
              for data in (X, sp.csr_matrix(X), sp.csc_matrix(X))]
    for other in models[1:]:
        np.testing.assert_array_equal(models[0].booster_.nodes, other.booster_.nodes)
        np.testing.assert_array_equal(models[0].predict_proba(X), other.predict_proba(X))


def test_a_row_major_copy_without_a_dense_feature_is_refused():
    X, mapper, binned, g, h = _mostly_default(n=500)
    offsets = histogram_offsets(mapper.n_bins_non_missing_)
    columns = SparseColumns(binned, offsets)
    buffers = GrowerBuffers(500)
    partition = np.arange(500, dtype=np.uint32)

    def kernels(rows_features):
        X_rows = np.ascontiguousarray(binned[:, rows_features])
        return _grow.NodeKernels(
            binned, X_rows, g, h, partition, buffers.left, buffers.right,
            np.empty((1, offsets[-1]), HISTOGRAM_DTYPE), np.ones(binned.shape[1], np.uint8),
            mapper.n_bins_non_missing_, 255, 1.0, 20, 1e-3, 0.0, offsets=offsets,
            sparse=columns, rows_features=rows_features)

    kernels(np.flatnonzero(columns.is_sparse == 0))
    with pytest.raises(ValueError, match="lacks a feature"):
        kernels(np.array([0, 2, 3]))
    with pytest.raises(ValueError, match="increasing"):
        kernels(np.array([1, 0, 10]))

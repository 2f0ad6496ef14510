"""Histograms and the subtraction trick (``_cext/_histogram.pyx``) against bincount."""
import numpy as np
import pytest
from kernel_data import mixed_data, naive_histogram

from dartboost._binning import BinMapper
from dartboost._cext import _histogram
from dartboost._common import HISTOGRAM_DTYPE


@pytest.fixture
def data():
    return mixed_data()


def test_histograms_and_subtraction(data):
    X, g, h = data
    mapper = BinMapper(max_bins=64, random_state=0).fit(X)
    binned = mapper.transform(X)
    n_bins = 65
    rows = np.sort(np.random.default_rng(2).choice(X.shape[0], 1200, replace=False)).astype(
        np.uint32)
    mask = np.ones(X.shape[1], dtype=np.uint8)
    hist = np.empty((X.shape[1], n_bins), dtype=HISTOGRAM_DTYPE)
    _histogram.build_histogram(binned, rows, g, h, mask, False, False, 2, hist)
    ref = naive_histogram(binned, rows, g, h, n_bins)
    for field in ("sum_gradients", "sum_hessians"):
        np.testing.assert_allclose(hist[field], ref[field], rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(hist["count"], ref["count"])

    all_rows = np.arange(3000, dtype=np.uint32)
    parent = np.empty_like(hist)
    _histogram.build_histogram(binned, all_rows, g, h, mask, True, False, 2, parent)
    other = np.setdiff1d(all_rows, rows).astype(np.uint32)
    sub = np.empty_like(hist)
    _histogram.subtract_histograms(parent, hist, mask, 2, sub)
    ref_other = naive_histogram(binned, other, g, h, n_bins)
    np.testing.assert_array_equal(sub["count"], ref_other["count"])
    np.testing.assert_allclose(sub["sum_gradients"], ref_other["sum_gradients"], atol=1e-4)

    # constant hessians: only gradients and counts are summed
    ones = np.ones(3000, np.float32)
    const = np.empty_like(hist)
    _histogram.build_histogram(binned, rows, g, ones, mask, False, True, 2, const)
    ref_const = naive_histogram(binned, rows, g, ones, n_bins)
    np.testing.assert_array_equal(const["sum_hessians"], ref_const["sum_hessians"])
    np.testing.assert_allclose(const["sum_gradients"], ref_const["sum_gradients"], atol=1e-5)


@pytest.mark.parametrize("hessians_are_constant", [False, True])
@pytest.mark.parametrize("all_rows", [False, True])
def test_row_chunked_histograms(hessians_are_constant, all_rows):
    # a node of more than CHUNK_ROWS rows is filled as per-chunk partial
    # histograms added in chunk order: the same sums for any thread count
    n, n_features = 3 * _histogram.ROWS_PER_CHUNK + 1001, 7
    X, g, h = mixed_data(n=n, n_features=n_features, seed=9)
    if hessians_are_constant:
        h = np.full(n, 0.5, np.float32)
    mapper = BinMapper(random_state=0).fit(X)
    binned = mapper.transform(X)
    n_rows = 2 * _histogram.ROWS_PER_CHUNK + 17
    rows = (np.arange(n, dtype=np.uint32) if all_rows else
            np.sort(np.random.default_rng(0).choice(n, n_rows, replace=False)).astype(np.uint32))
    assert _histogram.n_chunks_for(rows.size, 64) >= 3
    mask = np.array([1, 1, 0, 1, 1, 1, 0], np.uint8)
    partial = np.empty((64, n_features, 256), dtype=HISTOGRAM_DTYPE)
    ref = naive_histogram(binned, rows, g, h, 256)
    results = []
    for n_threads, scratch in ((1, partial), (2, partial), (3, partial), (2, None)):
        hist = np.zeros((n_features, 256), dtype=HISTOGRAM_DTYPE)
        hist["count"][~mask.astype(bool)] = 7  # masked features are left untouched
        _histogram.build_histogram(binned, rows, g, h, mask, all_rows,
                                   hessians_are_constant, n_threads, hist, scratch)
        m = mask.astype(bool)
        np.testing.assert_array_equal(hist["count"][m], ref["count"][m])
        np.testing.assert_array_equal(hist["count"][~m], 7)
        for field in ("sum_gradients", "sum_hessians"):
            np.testing.assert_allclose(hist[field][m], ref[field][m], rtol=1e-6, atol=1e-4)
        results.append(hist)
    # identical bits for 1, 2 and 3 threads with the same scratch
    for other in results[1:3]:
        np.testing.assert_array_equal(results[0], other)


def test_partial_scratch_bounds_the_chunks():
    chunk = _histogram.ROWS_PER_CHUNK
    assert _histogram.n_chunks_for(10, 64) == 1
    assert _histogram.n_chunks_for(chunk, 64) == 1
    assert _histogram.n_chunks_for(chunk + 1, 64) == 2
    assert _histogram.n_chunks_for(10 ** 8, 64) == 64
    assert _histogram.n_chunks_for(10 ** 8, 1) == 1


def test_scratch_of_another_shape_is_rejected():
    binned = np.zeros((10, 3), dtype=np.uint8, order="F")
    g = np.zeros(10, np.float32)
    rows = np.arange(10, dtype=np.uint32)
    mask = np.ones(3, np.uint8)
    hist = np.empty((3, 256), dtype=HISTOGRAM_DTYPE)
    with pytest.raises(ValueError, match="partial has shape"):
        _histogram.build_histogram(binned, rows, g, g, mask, True, False, 1, hist,
                                   np.empty((4, 2, 256), dtype=HISTOGRAM_DTYPE))
    with pytest.raises(ValueError, match="hist has 2 features"):
        _histogram.build_histogram(binned, rows, g, g, mask, True, False, 1, hist[:2])


def _few_bins_data(n=4000, seed=4):
    """Features of 1, 2, 3 and many bins, some with missing values."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([
        np.zeros(n),                                  # constant: 1 bin
        rng.integers(0, 2, n).astype(float),          # 2 bins
        np.where(rng.random(n) < 0.2, np.nan, rng.integers(0, 3, n)),  # 3 bins + missing
        rng.normal(size=n),                           # 255 bins
        np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),     # 255 bins + missing
    ])
    g = rng.normal(size=n).astype(np.float32)
    h = rng.uniform(0.5, 1.5, n).astype(np.float32)
    mapper = BinMapper(random_state=0).fit(X)
    return mapper, mapper.transform(X), g, h


def test_flat_histograms_cost_each_feature_its_own_bins():
    # feature f's records are its bins then its missing bin: a feature of 2
    # bins costs 3 records, not 256
    from dartboost._grower import histogram_offsets
    mapper, binned, g, h = _few_bins_data()
    nb = mapper.n_bins_non_missing_
    np.testing.assert_array_equal(nb, [1, 2, 3, 255, 255])
    offsets = histogram_offsets(nb)
    np.testing.assert_array_equal(np.diff(offsets), nb + 1)
    rows = np.sort(np.random.default_rng(1).choice(binned.shape[0], 2500,
                                                   replace=False)).astype(np.uint32)
    mask = np.ones(5, np.uint8)
    ref = naive_histogram(binned, rows, g, h, 256)
    partial = np.empty((4, offsets[-1]), HISTOGRAM_DTYPE)
    for n_threads, scratch, X_rows in ((1, None, None), (2, partial, None),
                                       (2, None, np.ascontiguousarray(binned))):
        flat = np.empty(offsets[-1], HISTOGRAM_DTYPE)
        _histogram.build_histogram(binned, rows, g, h, mask, False, False, n_threads, flat,
                                   scratch, X_rows, offsets=offsets)
        for f in range(5):
            mine = flat[offsets[f]:offsets[f + 1]]
            theirs = np.r_[ref[f, :nb[f]], ref[f, 255:]]  # its bins, then the missing bin
            np.testing.assert_array_equal(mine["count"], theirs["count"])
            for field in ("sum_gradients", "sum_hessians"):
                np.testing.assert_allclose(mine[field], theirs[field], rtol=1e-6, atol=1e-5)
        other = np.setdiff1d(np.arange(binned.shape[0]), rows).astype(np.uint32)
        parent = np.empty_like(flat)
        _histogram.build_histogram(binned, np.arange(binned.shape[0], dtype=np.uint32), g, h,
                                   mask, True, False, 1, parent, offsets=offsets)
        sub = np.empty_like(flat)
        _histogram.subtract_histograms(parent, flat, mask, n_threads, sub, offsets=offsets)
        ref_other = naive_histogram(binned, other, g, h, 256)
        for f in range(5):
            np.testing.assert_array_equal(sub["count"][offsets[f]:offsets[f + 1]],
                                          np.r_[ref_other["count"][f, :nb[f]],
                                                ref_other["count"][f, 255:]])


def test_flat_and_padded_histograms_hold_the_same_sums():
    from dartboost._grower import histogram_offsets
    mapper, binned, g, h = _few_bins_data(n=3 * _histogram.ROWS_PER_CHUNK, seed=8)
    offsets = histogram_offsets(mapper.n_bins_non_missing_)
    rows = np.arange(binned.shape[0], dtype=np.uint32)
    mask = np.array([1, 1, 1, 0, 1], np.uint8)
    padded = np.empty((5, 256), HISTOGRAM_DTYPE)
    flat = np.empty(offsets[-1], HISTOGRAM_DTYPE)
    _histogram.build_histogram(binned, rows, g, h, mask, True, False, 2, padded,
                               np.empty((3, 5, 256), HISTOGRAM_DTYPE))
    _histogram.build_histogram(binned, rows, g, h, mask, True, False, 2, flat,
                               np.empty((3, offsets[-1]), HISTOGRAM_DTYPE), offsets=offsets)
    nb = mapper.n_bins_non_missing_
    for f in np.flatnonzero(mask):  # bit for bit: the same chunks, the same order
        np.testing.assert_array_equal(flat[offsets[f]:offsets[f + 1]],
                                      np.r_[padded[f, :nb[f]], padded[f, 255:]])


def test_bad_layouts_are_refused():
    binned = np.zeros((10, 3), dtype=np.uint8, order="F")
    g = np.zeros(10, np.float32)
    rows = np.arange(10, dtype=np.uint32)
    mask = np.ones(3, np.uint8)
    offsets = np.array([0, 2, 4, 6])
    flat = np.empty(6, HISTOGRAM_DTYPE)
    for bad, match in ((np.array([0, 2, 4]), "4 entries"), (np.array([1, 2, 4, 6]), "4 entries"),
                       (np.array([0, 2, 2, 6]), "at least one record")):
        with pytest.raises(ValueError, match=match):
            _histogram.build_histogram(binned, rows, g, g, mask, True, False, 1, flat, None,
                                       None, bad)
    with pytest.raises(ValueError, match="flat with its offsets"):
        _histogram.build_histogram(binned, rows, g, g, mask, True, False, 1, flat)
    with pytest.raises(ValueError, match="its offsets need 6"):
        _histogram.build_histogram(binned, rows, g, g, mask, True, False, 1, flat[:5], None,
                                   None, offsets)
    with pytest.raises(ValueError, match="partial has shape"):
        _histogram.build_histogram(binned, rows, g, g, mask, True, False, 1, flat,
                                   np.empty((2, 7), HISTOGRAM_DTYPE), None, offsets)
    with pytest.raises(ValueError, match="out has 5 records"):
        _histogram.subtract_histograms(flat, flat, mask, 1, np.empty(5, HISTOGRAM_DTYPE),
                                       offsets=offsets)

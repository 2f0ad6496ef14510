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

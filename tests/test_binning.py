"""Binning (``_cext/_binning.pyx``, ``dartboost/_binning.py``) against searchsorted."""
import numpy as np
import pytest
from kernel_data import mixed_data

from dartboost._binning import BinMapper


@pytest.fixture
def data():
    return mixed_data()


def test_binning_matches_searchsorted(data):
    X, _, _ = data
    mapper = BinMapper(max_bins=32, random_state=0).fit(X)
    binned = mapper.transform(X)
    assert binned.flags.f_contiguous and binned.dtype == np.uint8
    for f in range(X.shape[1]):
        col = X[:, f]
        expected = np.searchsorted(mapper.bin_thresholds_[f], col, side="left")
        expected[np.isnan(col)] = mapper.missing_values_bin_idx_
        np.testing.assert_array_equal(binned[:, f], expected)
    # few distinct values get one bin each
    assert mapper.n_bins_non_missing_[1] == 7
    assert np.all(mapper.n_bins_non_missing_ <= 32)


def test_binning_thresholds_from_subsample_are_quantiles():
    rng = np.random.default_rng(1)
    X = rng.uniform(size=(50_000, 1))
    mapper = BinMapper(max_bins=10, subsample=20_000, random_state=0).fit(X)
    counts = np.bincount(mapper.transform(X)[:, 0], minlength=10)
    assert counts.min() > 0.08 * X.shape[0] and counts.max() < 0.12 * X.shape[0]


def test_thresholds_do_not_depend_on_the_thread_count(data):
    X, _, _ = data
    one = BinMapper(max_bins=64, random_state=0, n_threads=1).fit(X)
    two = BinMapper(max_bins=64, random_state=0, n_threads=2).fit(X)
    for a, b in zip(one.bin_thresholds_, two.bin_thresholds_):
        np.testing.assert_array_equal(a, b)

"""Row partition (``_splitting.split_indices``): a stable partition of a node's
rows, on one chunk and on the parallel multi-chunk path."""
import numpy as np
import pytest
from kernel_data import mixed_data

from dartboost._binning import BinMapper
from dartboost._cext import _splitting


@pytest.fixture
def data():
    return mixed_data()


def test_split_indices_is_stable_partition(data):
    X, _, _ = data
    mapper = BinMapper(random_state=0).fit(X)
    binned = mapper.transform(X)
    rows = np.arange(0, 3000, 2, dtype=np.uint32)
    for missing_left in (False, True):
        part = rows.copy()
        n_left = _splitting.split_indices(binned, part, 2, 100, missing_left, 255,
                                          np.empty(3000, np.uint32), np.empty(3000, np.uint32), 2)
        col = binned[rows, 2]
        goes_left = np.where(col == 255, missing_left, col <= 100)
        np.testing.assert_array_equal(part[:n_left], rows[goes_left])
        np.testing.assert_array_equal(part[n_left:], rows[~goes_left])


def _reference(binned, rows, feature, threshold, missing_left):
    col = binned[rows, feature]
    goes_left = np.where(col == 255, missing_left, col <= threshold)
    return np.concatenate([rows[goes_left], rows[~goes_left]]), int(goes_left.sum())


@pytest.mark.parametrize("n_threads", [2, 4])
@pytest.mark.parametrize("rows_kind", ["all", "scattered"])
def test_multi_chunk_partition_is_stable(n_threads, rows_kind):
    # n >= 8192 * n_threads takes the parallel path: one chunk per thread,
    # then the chunks are copied back at prefix-sum offsets
    n = 8192 * n_threads + 1237
    X, _, _ = mixed_data(n=2 * n + 11, n_features=3, seed=7)
    binned = BinMapper(random_state=0).fit_transform(X)
    rows = np.arange(binned.shape[0], dtype=np.uint32)
    if rows_kind == "scattered":
        rows = np.sort(np.random.default_rng(1).choice(rows, n, replace=False)).astype(np.uint32)
    else:
        rows = rows[:n].copy()
    assert rows.size >= 8192 * n_threads
    left, right = np.empty(binned.shape[0], np.uint32), np.empty(binned.shape[0], np.uint32)
    for feature, threshold in ((0, 100), (2, 60), (1, 3)):
        for missing_left in (False, True):
            part = rows.copy()
            n_left = _splitting.split_indices(binned, part, feature, threshold, missing_left, 255,
                                              left, right, n_threads)
            expected, expected_left = _reference(binned, rows, feature, threshold, missing_left)
            assert n_left == expected_left
            np.testing.assert_array_equal(part, expected)


@pytest.mark.parametrize("threshold", [0, 254])
def test_partition_with_an_empty_side(threshold):
    n = 8192 * 2 + 5
    rng = np.random.default_rng(2)
    binned = np.asfortranarray(rng.integers(1, 254, size=(n, 1)).astype(np.uint8))
    rows = np.arange(n, dtype=np.uint32)
    part = rows.copy()
    n_left = _splitting.split_indices(binned, part, 0, threshold, False, 255,
                                      np.empty(n, np.uint32), np.empty(n, np.uint32), 2)
    assert n_left == (0 if threshold == 0 else n)
    np.testing.assert_array_equal(part, rows)

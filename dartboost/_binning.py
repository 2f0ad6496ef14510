"""Quantile binning of features into at most 255 bins plus a missing-value bin.

Thresholds are learned from a subsample of the rows (as in LightGBM and
scikit-learn's HistGradientBoosting), so fitting the binner is cheap on large
data; every row is then mapped by the compiled kernel.
"""
import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state

from ._cext import _binning
from ._common import X_BINNED_DTYPE, X_DTYPE, MAX_BINS, threads_for


def _find_thresholds(col, max_bins):
    """Thresholds (upper bin edges) for one feature's non-missing values."""
    col = np.sort(col[~np.isnan(col)])
    if col.size == 0:
        return np.empty(0, dtype=X_DTYPE)
    is_new = np.empty(col.size, dtype=bool)
    is_new[0] = True
    np.not_equal(col[1:], col[:-1], out=is_new[1:])
    distinct = col[is_new]
    if distinct.size <= max_bins:
        # midpoints between consecutive distinct values: exact bins
        thresholds = (distinct[:-1] + distinct[1:]) * 0.5
    else:
        # quantiles of the (already sorted) values, midpoint interpolation
        pos = np.linspace(0, 1, num=max_bins + 1)[1:-1] * (col.size - 1)
        thresholds = 0.5 * (col[np.floor(pos).astype(np.intp)] + col[np.ceil(pos).astype(np.intp)])
        thresholds = np.unique(thresholds)
    # +inf maps to the last bin anyway; drop non-finite edges
    thresholds = thresholds[np.isfinite(thresholds)]
    return np.ascontiguousarray(thresholds, dtype=X_DTYPE)


def _find_categories(col, max_bins):
    """Kept categories of a categorical feature: its ``max_bins - 1`` most
    frequent non-missing values (ties: the smaller value), sorted. Rarer ones
    share the pooled bin after them (LightGBM keeps the frequent levels too),
    so any number of levels fits the uint8 bins."""
    col = col[~np.isnan(col)]
    if not np.all(np.isfinite(col)):
        raise ValueError("Categorical features must not hold infinite values; "
                         "use NaN for a missing category.")
    values, counts = np.unique(col, return_counts=True)
    keep = max_bins - 1
    if values.size > keep:
        # stable sort by decreasing count keeps ties in increasing value
        order = np.argsort(-counts, kind="stable")[:keep]
        values = np.sort(values[order])
    return np.ascontiguousarray(values, dtype=X_DTYPE)


def _sparse_column(X, f):
    """Column ``f`` of a CSC matrix with its zeros (one column at a time)."""
    lo, hi = X.indptr[f], X.indptr[f + 1]
    col = np.zeros(X.shape[0], dtype=X_DTYPE)
    col[X.indices[lo:hi]] = X.data[lo:hi]
    return col


def _map_features(fn, n_features, n_threads):
    """``[fn(f) for f in range(n_features)]`` on up to ``n_threads`` threads
    (NumPy's sort releases the GIL); each feature is independent, so the result
    does not depend on the thread count."""
    n_threads = min(n_threads, n_features)
    if n_threads <= 1:
        return [fn(f) for f in range(n_features)]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(n_threads) as pool:
        return list(pool.map(fn, range(n_features)))


class BinMapper:
    """Learn per-feature bin thresholds and map raw values to uint8 bins.

    Parameters
    ----------
    max_bins : int, default=255
        Bins for non-missing values (at most 255). NaN always goes to the
        extra bin ``missing_values_bin_idx == max_bins``.
    subsample : int or None, default=200_000
        Rows used to learn thresholds.
    random_state : int, RandomState or None
        Seeds the row subsample.
    n_threads : int
        OpenMP threads for the mapping.
    is_categorical : array-like of bool, shape (n_features,), or None
        Categorical features: their values are category labels (any finite
        numbers; NaN is missing). The ``max_bins - 1`` most frequent become
        bins ``0 .. k-1`` (in increasing value), all others share the pooled
        bin ``k``; ``bin_thresholds_[f]`` then holds the kept categories.
    """

    def __init__(self, max_bins=MAX_BINS, subsample=200_000, random_state=None, n_threads=1,
                 is_categorical=None):
        self.max_bins = max_bins
        self.subsample = subsample
        self.random_state = random_state
        self.n_threads = n_threads
        self.is_categorical = is_categorical

    def _categorical_flags(self, n_features):
        flags = (np.zeros(n_features, dtype=np.uint8) if self.is_categorical is None
                 else np.asarray(self.is_categorical, dtype=bool).astype(np.uint8))
        if flags.shape != (n_features,):
            raise ValueError(f"is_categorical has shape {flags.shape}; expected "
                             f"({n_features},).")
        return np.ascontiguousarray(flags)

    def fit(self, X):
        """Learn thresholds from ``X`` (float64, NaN for missing; a scipy
        sparse matrix is read column by column, never densified whole)."""
        if not 2 <= self.max_bins <= MAX_BINS:
            raise ValueError(f"max_bins={self.max_bins} must be in [2, {MAX_BINS}].")
        sparse = sp.issparse(X)
        X = X.astype(X_DTYPE) if sparse else np.asarray(X, dtype=X_DTYPE)
        if self.subsample is not None and X.shape[0] > self.subsample:
            rng = check_random_state(self.random_state)
            rows = np.sort(rng.choice(X.shape[0], self.subsample, replace=False))
            X = X[rows]
        self.is_categorical_ = self._categorical_flags(X.shape[1])
        if sparse:
            X = sp.csc_matrix(X)
            column = lambda f: _sparse_column(X, f)  # noqa: E731
        else:
            column = lambda f: X[:, f]  # noqa: E731

        def find(f):
            if self.is_categorical_[f]:
                return _find_categories(column(f), self.max_bins)
            return _find_thresholds(column(f), self.max_bins)

        self.bin_thresholds_ = _map_features(find, X.shape[1], self.n_threads)
        self.n_bins_non_missing_ = np.array(
            [t.size + 1 for t in self.bin_thresholds_], dtype=np.uint32
        )
        self.missing_values_bin_idx_ = self.max_bins
        self._set_flat()
        return self

    def _set_flat(self):
        lengths = [t.size for t in self.bin_thresholds_]
        self._offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self._offsets[1:])
        self._flat = (
            np.concatenate(self.bin_thresholds_).astype(X_DTYPE)
            if lengths
            else np.empty(0, dtype=X_DTYPE)
        )

    def transform(self, X):
        """Bin ``X`` into a column-contiguous uint8 array. A scipy sparse
        ``X`` is binned column by column: its implicit zeros get the bin of
        0.0 (as in a dense ``X``), its stored entries their own bins."""
        if sp.issparse(X):
            return self._transform_sparse(X)
        X = np.ascontiguousarray(X, dtype=X_DTYPE)
        binned = np.empty(X.shape, dtype=X_BINNED_DTYPE, order="F")
        _binning.map_to_bins(
            X, self._flat, self._offsets, self.missing_values_bin_idx_,
            threads_for(X.size * 8, self.n_threads), binned, self.is_categorical_
        )
        return binned

    def _transform_sparse(self, X):
        X = sp.csc_matrix(X, dtype=X_DTYPE)
        X.sort_indices()
        n, n_features = X.shape
        binned = np.empty((n, n_features), dtype=X_BINNED_DTYPE, order="F")
        for f in range(n_features):
            lo, hi = X.indptr[f], X.indptr[f + 1]
            # zero first, then the stored entries: one kernel call per column
            values = np.concatenate([[0.0], X.data[lo:hi]])[:, None]
            out = np.empty((values.shape[0], 1), dtype=X_BINNED_DTYPE, order="F")
            _binning.map_to_bins(
                np.ascontiguousarray(values), self.bin_thresholds_[f],
                np.array([0, self.bin_thresholds_[f].size], dtype=np.int64),
                self.missing_values_bin_idx_, 1, out, self.is_categorical_[f:f + 1])
            binned[:, f] = out[0, 0]
            binned[X.indices[lo:hi], f] = out[1:, 0]
        return binned

    def fit_transform(self, X):
        return self.fit(X).transform(X)

    # --- plain-array state, used by the model format -----------------------
    def to_arrays(self):
        """Thresholds as flat arrays (no pickle needed to store them)."""
        return {"bin_thresholds": self._flat.copy(), "bin_offsets": self._offsets.copy(),
                "is_categorical": self.is_categorical_.copy()}

    @property
    def has_categorical(self):
        return bool(self.is_categorical_.any())

    @classmethod
    def from_arrays(cls, max_bins, bin_thresholds, bin_offsets, n_threads=1,
                    is_categorical=None):
        """Rebuild a fitted mapper from :meth:`to_arrays` output."""
        mapper = cls(max_bins=max_bins, n_threads=n_threads)
        mapper.is_categorical = is_categorical
        bin_offsets = np.asarray(bin_offsets, dtype=np.int64)
        bin_thresholds = np.asarray(bin_thresholds, dtype=X_DTYPE)
        mapper.bin_thresholds_ = [
            bin_thresholds[bin_offsets[f]:bin_offsets[f + 1]] for f in range(bin_offsets.size - 1)
        ]
        mapper.n_bins_non_missing_ = np.diff(bin_offsets).astype(np.uint32) + 1
        mapper.missing_values_bin_idx_ = max_bins
        mapper.is_categorical_ = mapper._categorical_flags(bin_offsets.size - 1)
        mapper._set_flat()
        return mapper

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
from ._sparse_columns import SparseBinned, SparseColumns, is_mostly_default


def _find_thresholds(col, max_bins):
    """Thresholds (upper bin edges) for one feature's non-missing values."""
    return _thresholds_of_sorted(np.sort(col[~np.isnan(col)]), 0, max_bins)


def _distinct(sorted_values):
    """Distinct values of a sorted array (the first of each run)."""
    if sorted_values.size == 0:
        return sorted_values
    is_new = np.empty(sorted_values.size, dtype=bool)
    is_new[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=is_new[1:])
    return sorted_values[is_new]


def _thresholds_of_sorted(values, n_zeros, max_bins):
    """Thresholds of the column made of the sorted non-missing ``values``
    plus ``n_zeros`` implicit zeros (a sparse column: the zeros are never
    written out, yet the thresholds equal those of its dense copy)."""
    n_total = values.size + n_zeros
    if n_total == 0:
        return np.empty(0, dtype=X_DTYPE)
    n_neg = int(np.searchsorted(values, 0.0, side="left"))  # zeros go here
    distinct = _distinct(values)
    if n_zeros and not np.any(distinct == 0.0):
        at = int(np.searchsorted(distinct, 0.0))
        distinct = np.concatenate([distinct[:at], [0.0], distinct[at:]])
    if distinct.size <= max_bins:
        # midpoints between consecutive distinct values: exact bins
        thresholds = (distinct[:-1] + distinct[1:]) * 0.5
    else:
        # quantiles of the sorted column, midpoint interpolation
        pos = np.linspace(0, 1, num=max_bins + 1)[1:-1] * (n_total - 1)

        def at(idx):  # the sorted column's entries at positions ``idx``
            out = np.zeros(idx.size, dtype=X_DTYPE)
            low, high = idx < n_neg, idx >= n_neg + n_zeros
            out[low] = values[idx[low]]
            out[high] = values[idx[high] - n_zeros]
            return out

        thresholds = 0.5 * (at(np.floor(pos).astype(np.intp)) + at(np.ceil(pos).astype(np.intp)))
        thresholds = np.unique(thresholds)
    # +inf maps to the last bin anyway; drop non-finite edges
    thresholds = thresholds[np.isfinite(thresholds)]
    return np.ascontiguousarray(thresholds, dtype=X_DTYPE)


def _find_categories(col, max_bins, n_zeros=0):
    """Kept categories of a categorical feature: its ``max_bins - 1`` most
    frequent non-missing values (ties: the smaller value), sorted. Rarer ones
    share the pooled bin after them (LightGBM keeps the frequent levels too),
    so any number of levels fits the uint8 bins. ``n_zeros`` more rows hold
    the label 0 (the implicit zeros of a sparse column)."""
    col = col[~np.isnan(col)]
    if not np.all(np.isfinite(col)):
        raise ValueError("Categorical features must not hold infinite values; "
                         "use NaN for a missing category.")
    values, counts = np.unique(col, return_counts=True)
    if n_zeros:
        at = int(np.searchsorted(values, 0.0))
        if at < values.size and values[at] == 0.0:
            counts[at] += n_zeros
        else:
            values = np.insert(values, at, 0.0)
            counts = np.insert(counts, at, n_zeros)
    keep = max_bins - 1
    if values.size > keep:
        # stable sort by decreasing count keeps ties in increasing value
        order = np.argsort(-counts, kind="stable")[:keep]
        values = np.sort(values[order])
    return np.ascontiguousarray(values, dtype=X_DTYPE)


def _as_csc(X):
    """``X`` as a float64 CSC matrix without repeated entries (a dense copy
    would sum them), sharing ``X``'s arrays when it already is one."""
    X = sp.csc_matrix(X, dtype=X_DTYPE)
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    return X


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



#: Bytes of dense float64 rows a sparse input is expanded to at a time.
SPARSE_BLOCK_BYTES = 4 << 20
#: Bytes of C-ordered float64 rows another dense layout (float32, a
#: column-ordered array or DataFrame) is converted to at a time.
DENSE_BLOCK_BYTES = 8 << 20


def dense_blocks(X):
    """``(start, stop, dense rows)`` of ``X``: itself when C-ordered float64;
    otherwise in blocks of rows converted to that layout (a CSR matrix
    expanded), so memory is one block, not a copy of the whole matrix."""
    if not sp.issparse(X) and X.dtype == X_DTYPE and X.flags.c_contiguous:
        yield 0, X.shape[0], X
        return
    block_bytes = SPARSE_BLOCK_BYTES if sp.issparse(X) else DENSE_BLOCK_BYTES
    step = max(1, block_bytes // (8 * max(X.shape[1], 1)))
    for start in range(0, X.shape[0], step):
        stop = min(start + step, X.shape[0])
        rows = X[start:stop].toarray() if sp.issparse(X) else X[start:stop]
        yield start, stop, np.ascontiguousarray(rows, dtype=X_DTYPE)
    if X.shape[0] == 0:
        yield 0, 0, np.zeros((0, X.shape[1]), dtype=X_DTYPE)


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
        # a dense X is subsampled before it becomes float64: a float32 or
        # column-ordered input is then copied only for the sampled rows
        X = _as_csc(X) if sparse else np.asarray(X)
        if self.subsample is not None and X.shape[0] > self.subsample:
            rng = check_random_state(self.random_state)
            rows = np.sort(rng.choice(X.shape[0], self.subsample, replace=False))
            X = X[rows]
        if not sparse:
            X = np.asarray(X, dtype=X_DTYPE)
        self.is_categorical_ = self._categorical_flags(X.shape[1])
        n_rows = X.shape[0]

        def find(f):
            if sparse:  # stored entries plus the count of implicit zeros
                col = X.data[X.indptr[f]:X.indptr[f + 1]]
                n_zeros = n_rows - col.size
            else:
                col, n_zeros = X[:, f], 0
            if self.is_categorical_[f]:
                return _find_categories(col, self.max_bins, n_zeros)
            return _thresholds_of_sorted(np.sort(col[~np.isnan(col)]), n_zeros, self.max_bins)

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

    def transform(self, X, features=None):
        """Bin ``X`` into a column-contiguous uint8 array.

        Parameters
        ----------
        X : ndarray or scipy sparse matrix of shape (n_samples, n_features)
            A sparse ``X`` is binned from its columns: the implicit zeros get
            the bin of 0.0 (as in a dense ``X``), the stored entries their
            own bins, and no dense float copy is ever made.
        features : array-like of int or None
            Bin only these features (column ``j`` of the result is feature
            ``features[j]``); all by default.

        Returns
        -------
        ndarray of uint8, shape (n_samples, len(features)), Fortran order
        """
        n_features = self._offsets.size - 1
        features = (np.arange(n_features, dtype=np.int64) if features is None
                    else np.ascontiguousarray(features, dtype=np.int64))
        sparse = sp.issparse(X)
        if not sparse and not (isinstance(X, np.ndarray) and X.dtype == X_DTYPE
                               and X.flags.c_contiguous):
            X = np.asarray(X)
            if X.ndim == 2 and X.shape[1] == n_features and X.shape[0]:
                # float32 or column-ordered input (a DataFrame's layout):
                # converted one block of rows at a time, never copied whole
                binned = np.empty((X.shape[0], features.size), dtype=X_BINNED_DTYPE,
                                  order="F")
                for start, stop, block in dense_blocks(X):
                    binned[start:stop] = self.transform(block, features)
                return binned
            X = np.ascontiguousarray(X, dtype=X_DTYPE)
        if X.ndim != 2 or X.shape[1] != n_features:
            raise ValueError(f"X has shape {X.shape}; the binner was fitted on "
                             f"{n_features} features.")
        if features.size and (features.min() < 0 or features.max() >= n_features):
            raise ValueError(f"features must be indices in [0, {n_features}).")
        binned = np.empty((X.shape[0], features.size), dtype=X_BINNED_DTYPE, order="F")
        if sparse:
            X = _as_csc(X)
            _binning.map_csc_to_bins(
                X.data, X.indices, X.indptr, self._flat, self._offsets, features,
                self.missing_values_bin_idx_,
                threads_for(X.shape[0] * features.size + X.nnz, self.n_threads), binned,
                self.is_categorical_)
            return binned
        _binning.map_to_bins(
            X, self._flat, self._offsets, features, self.missing_values_bin_idx_,
            threads_for(X.shape[0] * features.size * 8, self.n_threads), binned,
            self.is_categorical_)
        return binned

    def _largest_bins_csc(self, X):
        """Per feature of the CSC ``X``: rows in its most populated bin and
        that bin (O(stored entries))."""
        n_features = X.shape[1]
        counts = np.zeros((max(self.n_threads, 1), 256), dtype=np.int64)
        largest = np.empty(n_features, dtype=np.int64)
        best = np.empty(n_features, dtype=X_BINNED_DTYPE)
        _binning.largest_bin_rows_csc(
            X.data, X.indptr, X.shape[0], self._flat, self._offsets,
            self.missing_values_bin_idx_, threads_for(X.nnz + n_features, self.n_threads),
            largest, counts, self.is_categorical_, best)
        return largest, best

    def transform_compact(self, X, features, offsets, _largest=None):
        """Bin ``X``'s ``features`` for a fit, the mostly-default ones as
        entries.

        The rule of :class:`~dartboost._sparse_columns.SparseColumns` (at
        most ``MAX_NON_DEFAULT_FRACTION`` of the rows outside the most
        populated bin) picks them; a sparse ``X`` is counted and binned from
        its stored entries, never into ``n_samples x len(features)`` bytes,
        and gives what its dense copy gives.

        Parameters
        ----------
        X : ndarray or scipy sparse matrix of shape (n_samples, n_features)
        features : array-like of int
            The features binned (column ``j`` of the result is
            ``features[j]``), increasing.
        offsets : ndarray of intp, shape (len(features) + 1,)
            The histograms' layout of those features (the entries are their
            records; ``dartboost._grower.histogram_offsets``).

        Returns
        -------
        ndarray of uint8, shape (n_samples, len(features)), Fortran order,
        when no feature is mostly default; else a
        :class:`~dartboost._sparse_columns.SparseBinned`.
        """
        features = np.ascontiguousarray(features, dtype=np.int64)
        offsets = np.ascontiguousarray(offsets, dtype=np.intp)
        if offsets.shape != (features.size + 1,):
            raise ValueError(f"offsets must have {features.size + 1} entries")
        missing = self.missing_values_bin_idx_
        if not sp.issparse(X):
            return SparseBinned.compact(self.transform(X, features), offsets, missing)
        X = _as_csc(X)
        largest, best = self._largest_bins_csc(X) if _largest is None else _largest
        n = X.shape[0]
        is_sparse = is_mostly_default(n, largest[features])
        if not is_sparse.any():
            return self.transform(X, features)
        local = np.flatnonzero(is_sparse)
        last = np.diff(offsets)[local] - 1
        default = best[features[local]]
        row_ptr, records, col_counts, col_rows = _binning.entries_csc(
            X.data, X.indices, X.indptr, n, self._flat, self._offsets,
            np.ascontiguousarray(features[local]),
            np.ascontiguousarray(offsets[local], dtype=np.int64),
            np.ascontiguousarray(last, dtype=np.int64), np.ascontiguousarray(default),
            missing, self.is_categorical_)
        default_record = offsets[:-1].copy()
        default_record[local] += np.minimum(default.astype(np.intp), last)
        col_ptr = np.zeros(features.size + 1, dtype=np.intp)
        col_ptr[1:][local] = col_counts
        np.cumsum(col_ptr, out=col_ptr)
        columns = SparseColumns.from_entries(is_sparse.astype(np.uint8), default_record,
                                             row_ptr, records, col_ptr, col_rows)
        dense_features = np.flatnonzero(~is_sparse)
        return SparseBinned(self.transform(X, features[dense_features]), dense_features,
                            columns, offsets, missing)

    def transform_splittable(self, X, min_rows, keep=None, offsets_of=None):
        """Bin only the features of ``X`` that can split.

        A split puts at least ``min_rows`` rows on each side, so a feature
        whose rows outside its most populated bin (missing included) number
        fewer than ``min_rows`` can never split -- at this node nor at any
        below it, which holds a subset of the rows. Such features (constant
        ones, all-zero sparse columns, words in fewer documents than a leaf
        needs) are left out of the binned matrix; a sparse ``X`` is counted
        from its stored entries before the matrix is allocated.

        Parameters
        ----------
        X : ndarray or scipy sparse matrix of shape (n_samples, n_features)
        min_rows : int
            Fewest rows a split leaves on either side (``min_samples_leaf``).
        keep : array-like of int or None
            Features kept in any case (those the model already splits on).

        offsets_of : callable or None
            ``offsets_of(features)``: the histograms' layout of the used
            features. Given, the mostly-default ones are kept as entries
            (:meth:`transform_compact`) and ``binned`` may be a
            :class:`~dartboost._sparse_columns.SparseBinned`.

        Returns
        -------
        binned : ndarray of uint8, shape (n_samples, n_used), Fortran order
        features : ndarray of int64, shape (n_used,)
            Increasing original index of each column of ``binned`` (never
            empty: with no feature able to split, the first one is kept).
        """
        n_samples, n_features = X.shape
        counts = np.zeros((max(self.n_threads, 1), 256), dtype=np.int64)
        largest = np.empty(n_features, dtype=np.int64)
        full = None
        if sp.issparse(X):
            X = _as_csc(X)
            largest, best = self._largest_bins_csc(X)
        else:  # a dense X costs 8 bytes a value: binning it whole first is cheap
            full = self.transform(X)
            _binning.largest_bin_rows_binned(full, threads_for(full.size, self.n_threads),
                                             largest, counts)
        usable = n_samples - largest >= min_rows
        if keep is not None:
            usable[np.asarray(keep, dtype=np.intp)] = True
        if not usable.any() and n_features:
            usable[0] = True
        features = np.flatnonzero(usable).astype(np.int64)
        if full is None:
            if offsets_of is not None:
                return self.transform_compact(X, features, offsets_of(features),
                                              (largest, best)), features
            return self.transform(X, features), features
        if features.size == n_features:
            binned = full
        else:
            binned = np.empty((n_samples, features.size), dtype=X_BINNED_DTYPE, order="F")
            np.take(full, features, axis=1, out=binned)
        del full
        if offsets_of is not None:
            binned = SparseBinned.compact(binned, offsets_of(features),
                                          self.missing_values_bin_idx_, largest[features])
        return binned, features

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

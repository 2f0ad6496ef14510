"""Mostly-default features, kept as their non-default entries (built once per fit).

A bag-of-words matrix has thousands of features whose rows sit almost all in
one bin (the zero bin). Filling such a feature's histogram row by row spends
nearly all its work adding to that one bin. :class:`SparseColumns` picks, from
the *binned* matrix, the features with at most
:data:`MAX_NON_DEFAULT_FRACTION` of their rows outside their most populated
bin (their "default" bin), and keeps their other entries row by row (a CSR
structure: row ``r``'s entries are ``records[row_ptr[r]:row_ptr[r + 1]]``,
each the histogram record its bin fills). The histogram kernels then fill
those features from a node's entries only and get the default bin by
subtraction from the node's totals (gradients, hessians, count), as
LightGBM does for its sparse bins.

The choice is made on the binned values alone, so a dense and a sparse copy
of the same data (which bin identically) give the same features, the same
sums and the same models.

:class:`SparseBinned` is a whole binned matrix kept that way: the other
features' columns (dense uint8) plus the mostly-default features' entries,
so its bytes grow with the rows times the dense features plus the entries,
not with the rows times all features. The row partition and the score
keepers read a mostly-default feature's bin of a row from the row's entries
(``_cext/_entry_bins.pxi``). A CSR/CSC matrix is binned straight into it
(``BinMapper.transform_compact``), never into ``n_samples x n_features``
bytes.
"""
import numpy as np

#: A feature is filled from its entries when at most this fraction of the
#: rows is outside its default bin. An entry costs a few times a dense
#: update (a gathered record instead of a streamed column), so below some
#: 10% the entries are the cheaper walk; a feature of a dense table (many
#: evenly filled bins) never qualifies.
MAX_NON_DEFAULT_FRACTION = 0.1


class SparseColumns:
    """The non-default entries of a binned matrix's mostly-default features.

    Parameters
    ----------
    X_binned : ndarray of uint8, shape (n_samples, n_features)
    offsets : ndarray of intp, shape (n_features + 1,)
        The histograms' layout (``dartboost._grower.histogram_offsets``);
        a bin past a feature's last record (the missing code) fills the last.

    Attributes
    ----------
    is_sparse : ndarray of uint8, shape (n_features,)
    default_record : ndarray of intp, shape (n_features,)
        The record of each feature's default bin (meaningful where sparse).
    row_ptr : ndarray of intp, shape (n_samples + 1,)
    records : ndarray of uint32, shape (n_entries,)
        Row by row, in feature order within a row.
    col_ptr : ndarray of intp, shape (n_features + 1,)
    col_rows : ndarray of uint32, shape (n_entries,)
        The same entries' rows feature by feature (feature ``f``'s at
        ``col_rows[col_ptr[f]:col_ptr[f + 1]]``, ascending): a split on the
        feature partitions a node by walking them along its rows.
    """

    def __init__(self, X_binned, offsets):
        n, p = X_binned.shape
        offsets = np.asarray(offsets, dtype=np.intp)
        last = np.diff(offsets) - 1
        self.is_sparse = np.zeros(p, dtype=np.uint8)
        self.default_record = offsets[:-1].copy()
        rows_of, records_of = [], []
        for f in range(p):
            col = X_binned[:, f]
            counts = np.bincount(col, minlength=1)
            default = int(np.argmax(counts))  # ties: the lower bin
            if not is_mostly_default(n, counts[default]):
                continue
            self.is_sparse[f] = 1
            self.default_record[f] = offsets[f] + min(default, last[f])
            rows = np.flatnonzero(col != default)
            rows_of.append(rows)
            records_of.append(offsets[f] + np.minimum(col[rows], last[f]))
        rows = np.concatenate(rows_of) if rows_of else np.empty(0, dtype=np.intp)
        records = np.concatenate(records_of) if records_of else np.empty(0, dtype=np.intp)
        self.col_rows = rows.astype(np.uint32)
        self.col_ptr = np.zeros(p + 1, dtype=np.intp)
        self.col_ptr[1:][self.is_sparse.astype(bool)] = [r.size for r in rows_of]
        np.cumsum(self.col_ptr, out=self.col_ptr)
        order = np.argsort(rows, kind="stable")  # row by row, features ascending
        self.records = np.ascontiguousarray(records[order], dtype=np.uint32)
        self.row_ptr = np.zeros(n + 1, dtype=np.intp)
        np.cumsum(np.bincount(rows, minlength=n), out=self.row_ptr[1:])

    @property
    def n_sparse(self):
        return int(self.is_sparse.sum())

    @property
    def nbytes(self):
        return (self.records.nbytes + self.row_ptr.nbytes + self.is_sparse.nbytes
                + self.default_record.nbytes + self.col_rows.nbytes + self.col_ptr.nbytes)

    @classmethod
    def of(cls, X_binned, offsets):
        """A :class:`SparseColumns`, or None when no feature is mostly default."""
        columns = cls(X_binned, offsets)
        return columns if columns.n_sparse else None

    @classmethod
    def from_entries(cls, is_sparse, default_record, row_ptr, records, col_ptr, col_rows):
        """A :class:`SparseColumns` of entries made elsewhere (the sparse binner)."""
        columns = cls.__new__(cls)
        columns.col_ptr = np.ascontiguousarray(col_ptr, dtype=np.intp)
        columns.col_rows = np.ascontiguousarray(col_rows, dtype=np.uint32)
        columns.is_sparse = np.ascontiguousarray(is_sparse, dtype=np.uint8)
        columns.default_record = np.ascontiguousarray(default_record, dtype=np.intp)
        columns.row_ptr = np.ascontiguousarray(row_ptr, dtype=np.intp)
        columns.records = np.ascontiguousarray(records, dtype=np.uint32)
        return columns


def is_mostly_default(n_samples, largest_bin_rows):
    """Which features go to entries: at most :data:`MAX_NON_DEFAULT_FRACTION`
    of ``n_samples`` rows outside their most populated bin
    (``largest_bin_rows``, per feature). The rule of :class:`SparseColumns`."""
    largest = np.asarray(largest_bin_rows)
    if n_samples == 0:
        return np.zeros(largest.shape, dtype=bool)
    return n_samples - largest <= MAX_NON_DEFAULT_FRACTION * n_samples


class SparseBinned:
    """A binned matrix as its dense features' columns plus the entries of
    its mostly-default ones (see the module docstring).

    Parameters
    ----------
    dense : ndarray of uint8, shape (n_samples, n_dense), Fortran order
        The columns of the features ``dense_features``.
    dense_features : ndarray of int, shape (n_dense,)
        Increasing; every feature not flagged in ``columns.is_sparse``.
    columns : SparseColumns
        The other features' entries, records in the layout ``offsets``.
    offsets : ndarray of intp, shape (n_features + 1,)
        The histograms' layout the records are in.
    missing_bin_idx : int
        The binned matrix's missing code.

    Attributes
    ----------
    shape : (n_samples, n_features)
    column_of : ndarray of intc, shape (n_features,)
        Each feature's column of ``dense``, -1 for an entries feature.
    default_bin : ndarray of uint8, shape (n_features,)
        Each entries feature's default bin code (the missing code for its
        last record).
    """

    def __init__(self, dense, dense_features, columns, offsets, missing_bin_idx):
        offsets = np.ascontiguousarray(offsets, dtype=np.intp)
        n_features = offsets.size - 1
        self.dense = np.asfortranarray(dense)
        self.dense_features = np.ascontiguousarray(dense_features, dtype=np.intp)
        self.columns = columns
        self.offsets = offsets
        self.missing_bin_idx = int(missing_bin_idx)
        self.shape = (self.dense.shape[0], n_features)
        is_sparse = columns.is_sparse.astype(bool)
        if (self.dense.shape[1] != self.dense_features.size or is_sparse.shape != (n_features,)
                or not np.array_equal(np.flatnonzero(~is_sparse), self.dense_features)):
            raise ValueError("dense must hold exactly the features that are not sparse")
        if columns.row_ptr.shape != (self.shape[0] + 1,):
            raise ValueError("sparse entries need one row pointer per row, plus one")
        self.column_of = np.full(n_features, -1, dtype=np.intc)
        self.column_of[self.dense_features] = np.arange(self.dense_features.size,
                                                        dtype=np.intc)
        code = columns.default_record - offsets[:-1]
        last = np.diff(offsets) - 1
        self.default_bin = np.where(code == last, self.missing_bin_idx,
                                    np.minimum(code, 255)).astype(np.uint8)

    @property
    def nbytes(self):
        return self.dense.nbytes + self.columns.nbytes

    def entry_tables(self):
        """The arrays the kernels read for the entries features:
        ``(row_ptr, records, offsets, default_bin)``."""
        return (self.columns.row_ptr, self.columns.records, self.offsets, self.default_bin)

    def toarray(self):
        """The whole binned matrix (tests; it costs ``n_samples x n_features``)."""
        out = np.empty(self.shape, dtype=self.dense.dtype, order="F")
        out[:, self.dense_features] = self.dense
        c = self.columns
        sparse = np.flatnonzero(c.is_sparse)
        out[:, sparse] = self.default_bin[sparse]
        rows = np.repeat(np.arange(self.shape[0]), np.diff(c.row_ptr))
        features = np.searchsorted(self.offsets, c.records, side="right") - 1
        bins = c.records - self.offsets[features]
        last = self.offsets[features + 1] - self.offsets[features] - 1
        out[rows, features] = np.where(bins == last, self.missing_bin_idx, bins)
        return out

    @classmethod
    def compact(cls, X_binned, offsets, missing_bin_idx, largest_bin_rows=None):
        """``X_binned`` (a whole binned matrix) as a :class:`SparseBinned`,
        or itself when no feature is mostly default (known at once from
        ``largest_bin_rows``, each column's rows in its most populated bin,
        when given: a dense table then costs no pass over its columns)."""
        if largest_bin_rows is not None and not is_mostly_default(
                X_binned.shape[0], largest_bin_rows).any():
            return X_binned
        columns = SparseColumns.of(X_binned, offsets)
        if columns is None:
            return X_binned
        dense_features = np.flatnonzero(columns.is_sparse == 0)
        dense = np.empty((X_binned.shape[0], dense_features.size), dtype=X_binned.dtype,
                         order="F")
        np.take(X_binned, dense_features, axis=1, out=dense)
        return cls(dense, dense_features, columns, offsets, missing_bin_idx)

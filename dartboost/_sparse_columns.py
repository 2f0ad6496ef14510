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
    """

    def __init__(self, X_binned, offsets):
        n, p = X_binned.shape
        offsets = np.asarray(offsets, dtype=np.intp)
        last = np.diff(offsets) - 1
        self.is_sparse = np.zeros(p, dtype=np.uint8)
        self.default_record = offsets[:-1].copy()
        rows_of, records_of = [], []
        limit = MAX_NON_DEFAULT_FRACTION * n
        for f in range(p):
            col = X_binned[:, f]
            counts = np.bincount(col, minlength=1)
            default = int(np.argmax(counts))  # ties: the lower bin
            if n == 0 or n - counts[default] > limit:
                continue
            self.is_sparse[f] = 1
            self.default_record[f] = offsets[f] + min(default, last[f])
            rows = np.flatnonzero(col != default)
            rows_of.append(rows)
            records_of.append(offsets[f] + np.minimum(col[rows], last[f]))
        rows = np.concatenate(rows_of) if rows_of else np.empty(0, dtype=np.intp)
        records = np.concatenate(records_of) if records_of else np.empty(0, dtype=np.intp)
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
                + self.default_record.nbytes)

    @classmethod
    def of(cls, X_binned, offsets):
        """A :class:`SparseColumns`, or None when no feature is mostly default."""
        columns = cls(X_binned, offsets)
        return columns if columns.n_sparse else None

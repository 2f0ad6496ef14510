"""Raw scores of a data set kept current under DART's drops and rescalings.

DART needs, every iteration, the contribution of each dropped tree to every
training (and validation) row. XGBoost recomputes all trees; LightGBM
re-traverses each dropped tree over the data. We cache, per tree, the uint8
leaf index of every row, so a tree's contribution is a gather
``leaf_values[leaf_ids]``. The cache is bounded by a byte budget shared by all
data sets of a fit; trees beyond it (or with more than 255 leaves) fall back to
traversal of the binned data, which gives the same values.
"""
import numpy as np

from ._cext import _predictor
from ._common import threads_for
from ._sparse_columns import SparseBinned

#: Default byte budget for cached leaf indices of one fit (all data sets).
LEAF_CACHE_BYTES = 1 << 30


class CacheBudget:
    """Bytes left for leaf-index caches, shared by the score keepers of a fit."""

    def __init__(self, n_bytes=LEAF_CACHE_BYTES):
        self.remaining = n_bytes

    def take(self, n_bytes):
        if n_bytes <= self.remaining:
            self.remaining -= n_bytes
            return True
        return False


def leaf_layout(nodes):
    """``(node_to_leaf, leaf_nodes)`` of a tree: leaves numbered in node order."""
    leaf_nodes = np.flatnonzero(nodes["is_leaf"])
    node_to_leaf = np.zeros(nodes.shape[0], dtype=np.uint8)
    if leaf_nodes.size <= 256:
        node_to_leaf[leaf_nodes] = np.arange(leaf_nodes.size)
    return node_to_leaf, leaf_nodes


class ScoreKeeper:
    """Raw scores ``(K, n)`` of one binned data set, with per-tree leaf caches.

    Parameters
    ----------
    X_binned : ndarray of uint8, Fortran order, or SparseBinned
        A :class:`~dartboost._sparse_columns.SparseBinned` matrix is
        traversed from its dense columns and its rows' entries.
    raw : ndarray of float64, shape (K, n)
        Current raw scores; updated in place.
    missing_values_bin_idx : int
    budget : CacheBudget
    n_threads : int
    """

    def __init__(self, X_binned, raw, missing_values_bin_idx, budget, n_threads):
        self.X_binned = X_binned
        self.raw = raw
        self.missing_values_bin_idx = missing_values_bin_idx
        self.budget = budget
        self.n_threads = threads_for(raw.shape[1], n_threads)
        self.leaf_ids = []     # per tree: uint8 array or None
        self.leaf_values = []  # per tree: float64 array of leaf values
        self.nodes = []
        self.tables = []    # per tree: categorical tables for traversal

    @property
    def n_samples(self):
        return self.raw.shape[1]

    def register_tree(self, nodes, leaf_ids=None, cache=True, tables=None):
        """Remember a new tree; cache its rows' leaf ids if ``cache`` and the
        budget allow.

        ``leaf_ids`` may be given when already known (the grower's partition).
        A scheme that never revisits old trees (MART) passes ``cache=False``.
        ``tables`` (``is_categorical``, ``cat_bitsets``) are the categorical
        tables the tree's set splits index.
        """
        tables = tables or {}
        node_to_leaf, leaf_nodes = leaf_layout(nodes)
        cacheable = cache and leaf_nodes.size <= 256 and self.budget.take(self.n_samples)
        if cacheable and leaf_ids is None:
            leaf_ids = np.empty(self.n_samples, dtype=np.uint8)
            if isinstance(self.X_binned, SparseBinned):
                _predictor.tree_leaf_ids_split(nodes, *self._split_args(), node_to_leaf,
                                               self.n_threads, leaf_ids, **tables)
            else:
                _predictor.tree_leaf_ids_binned(nodes, self.X_binned,
                                                self.missing_values_bin_idx, node_to_leaf,
                                                self.n_threads, leaf_ids, **tables)
        self.leaf_ids.append(leaf_ids if cacheable else None)
        self.leaf_values.append(np.ascontiguousarray(nodes["value"][leaf_nodes]))
        self.nodes.append(nodes)
        self.tables.append(tables)

    def add_contribution(self, tree_idx, factor, out, leaf_ids=None):
        """``out += factor * tree(X)`` for tree ``tree_idx`` (``out`` is 1-D).

        ``leaf_ids`` (every row's leaf, numbered as :func:`leaf_layout` does)
        may be given when known but not cached (a new MART tree's training
        rows, from the grower's partition): a gather instead of a traversal,
        with the same values."""
        if leaf_ids is None:
            leaf_ids = self.leaf_ids[tree_idx]
        if leaf_ids is not None:
            _predictor.add_leaf_values(leaf_ids, self.leaf_values[tree_idx], factor,
                                       self.n_threads, out)
        elif isinstance(self.X_binned, SparseBinned):
            _predictor.add_tree_split(self.nodes[tree_idx], *self._split_args(), factor,
                                      self.n_threads, out, **self.tables[tree_idx])
        else:
            _predictor.add_tree_binned(self.nodes[tree_idx], self.X_binned,
                                       self.missing_values_bin_idx, factor, self.n_threads, out,
                                       **self.tables[tree_idx])

    def _split_args(self):
        X = self.X_binned
        return (X.dense, X.column_of, *X.entry_tables(), self.missing_values_bin_idx)

    def truncate(self, n_trees):
        del self.leaf_ids[n_trees:]
        del self.leaf_values[n_trees:]
        del self.nodes[n_trees:]
        del self.tables[n_trees:]

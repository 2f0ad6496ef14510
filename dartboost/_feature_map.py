"""The features a fit trains on, and the way back to the model's indices.

A fit bins only the features that can split (see
:meth:`dartboost._binning.BinMapper.transform_splittable`); the grower and
the training-score keepers then see ``n_used`` columns, numbered ``0 ..
n_used - 1`` ("local" indices). The booster, the model format and
prediction keep the original ("global") feature indices. :class:`FeatureMap`
translates between the two: the per-feature tables the grower needs are
taken at the used features, and tree nodes are renumbered on the way in and
out. A fit that uses every feature maps nothing (no copies).
"""
import numpy as np


class FeatureMap:
    """Used features of one fit.

    Parameters
    ----------
    features : ndarray of int, shape (n_used,)
        Increasing global index of each local feature.
    n_features : int
        Features of the model.
    """

    def __init__(self, features, n_features):
        self.features = np.asarray(features, dtype=np.int64)
        self.n_features = n_features
        self.identity = self.features.size == n_features
        self._local = np.full(n_features, -1, dtype=np.int64)
        self._local[self.features] = np.arange(self.features.size)

    @property
    def n_used(self):
        return self.features.size

    def take(self, per_feature):
        """A per-feature array (or list) restricted to the used features."""
        if per_feature is None or self.identity:
            return per_feature
        if isinstance(per_feature, list):
            return [per_feature[f] for f in self.features]
        return np.ascontiguousarray(np.asarray(per_feature)[self.features])

    def local_groups(self, groups):
        """Interaction groups in local indices. A feature that cannot split
        adds nothing to a group, so dropping it keeps the constraint."""
        if groups is None or self.identity:
            return groups
        return [[int(self._local[f]) for f in g if self._local[f] >= 0] for g in groups]

    def local_tables(self, tables):
        """Binned-traversal tables (``is_categorical``, ``cat_bitsets``) with
        the per-feature ones restricted to the used features."""
        if "is_categorical" not in tables or self.identity:
            return tables
        return {**tables, "is_categorical": self.take(tables["is_categorical"])}

    def _renumber(self, nodes, table):
        if self.identity:
            return nodes
        nodes = nodes.copy()
        inner = nodes["is_leaf"] == 0
        nodes["feature_idx"][inner] = table[nodes["feature_idx"][inner]]
        return nodes

    def to_global(self, nodes):
        """A copy of a grown tree's nodes with global feature indices."""
        return self._renumber(nodes, self.features)

    def to_local(self, nodes):
        """A copy of a model tree's nodes with local feature indices; every
        feature it splits on must be used."""
        inner = nodes["is_leaf"] == 0
        if not self.identity and np.any(self._local[nodes["feature_idx"][inner]] < 0):
            raise ValueError("a tree splits on a feature this fit does not use")
        return self._renumber(nodes, self._local)


def split_features(nodes):
    """Features the inner ``nodes`` split on (sorted, distinct)."""
    return np.unique(nodes["feature_idx"][nodes["is_leaf"] == 0]).astype(np.int64)

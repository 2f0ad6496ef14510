"""Leaf-wise tree growth on binned data.

Python decides which node to split next (a max-heap on split gain, bounded by
``max_leaf_nodes`` and ``max_depth``) and keeps the tree's records; the
compiled kernels build histograms, find splits and partition rows. Only the
smaller child's histogram is built: the larger one is the parent's minus the
smaller's, computed in place in the parent's array.

Two paths run the same kernels and grow the same trees. :class:`TreeGrower`
itself splits a node in one compiled call (``_grow.NodeKernels.split``:
partition, histograms and both children's split searches, without the GIL).
A subclass that overrides one of the row-reading steps (``_root_sums``,
``_build_hist``, ``_partition_rows``, ``_find_split``, ``_split``; the
distributed grower of ``dartboost.dask``) gets the step-by-step path that
calls them.

Histograms are flat arrays of :data:`HISTOGRAM_DTYPE` records: feature
``f``'s are ``hist[offsets[f]:offsets[f + 1]]`` (:func:`histogram_offsets`),
one per non-missing bin and the last one its missing bin, so a feature
costs its own bins (a sparse matrix's features have a handful), not the
widest feature's. Mostly-default features (:mod:`dartboost._sparse_columns`,
chosen once per fit from the binned matrix) are filled from their
non-default entries and get their default bin by subtraction.
"""
import heapq

import numpy as np

from ._cext import _grow, _histogram, _splitting
from ._common import HISTOGRAM_DTYPE, NODE_DTYPE, threads_for
from ._sparse_columns import SparseBinned, SparseColumns

#: Partition work per row relative to a histogram update of one feature
#: (``threads_for`` units): a row is read, compared and written once.
PARTITION_WORK_PER_ROW = 4
#: Bytes of scratch for the per-chunk histograms of a large node, and the most
#: chunks (the row-parallelism of one node's histogram).
PARTIAL_HISTOGRAM_BYTES = 16 << 20
MAX_ROW_CHUNKS = 64


def histogram_offsets(n_bins_non_missing):
    """Layout of the flat histograms: ``offsets`` (intp, ``n_features + 1``)
    with feature ``f``'s records at ``offsets[f] .. offsets[f + 1] - 1``: its
    ``n_bins_non_missing[f]`` bins, then its missing bin (the kernels put the
    binned matrix's missing code there)."""
    sizes = np.asarray(n_bins_non_missing, dtype=np.intp) + 1
    offsets = np.zeros(sizes.size + 1, dtype=np.intp)
    np.cumsum(sizes, out=offsets[1:])
    return offsets

# positions of NODE_DTYPE's fields in the grower's per-node lists
(_VALUE, _COUNT, _FEATURE, _NUM_THRESHOLD, _MISSING_LEFT, _LEFT, _RIGHT, _GAIN, _DEPTH,
 _IS_LEAF, _BIN_THRESHOLD, _SUM_HESSIANS) = range(12)
assert NODE_DTYPE.names == ("value", "count", "feature_idx", "num_threshold",
                            "missing_go_to_left", "left", "right", "gain", "depth", "is_leaf",
                            "bin_threshold", "sum_hessians")


class _Node:
    """A node under construction: its rows are ``partition[start:stop]``."""

    __slots__ = ("idx", "start", "stop", "depth", "sum_g", "sum_h", "hist", "split", "value",
                 "lower", "upper", "groups")

    def __init__(self, idx, start, stop, depth, sum_g, sum_h, value, lower=-np.inf,
                 upper=np.inf, groups=None):
        self.lower = lower    # bounds of the values under this node (monotonic_cst)
        self.upper = upper
        self.groups = groups  # interaction groups still open on this path
        self.idx = idx
        self.start = start
        self.stop = stop
        self.depth = depth
        self.sum_g = sum_g
        self.sum_h = sum_h
        self.value = value
        self.hist = None
        self.split = None

    @property
    def n_samples(self):
        return self.stop - self.start


class TreeGrower:
    """Grow one regression tree on gradients and hessians.

    Parameters
    ----------
    X_binned : ndarray of uint8, shape (n_samples, n_features), Fortran order, or SparseBinned
        A :class:`~dartboost._sparse_columns.SparseBinned` matrix (its
        entries in the layout :func:`histogram_offsets` gives
        ``n_bins_non_missing``) is read through the compiled steps of
        :class:`_grow.NodeKernels` only, the step-by-step ones included.
    gradients, hessians : ndarray of float32, shape (n_samples,)
    n_bins_non_missing : ndarray of uint32, shape (n_features,)
    missing_values_bin_idx : int
    sample_indices : ndarray of uint32 or None
        Rows to grow on (row subsampling), best ascending (histograms then
        read gradients and bins in a forward walk); ``None`` means all rows.
    feature_mask : ndarray of uint8 or None
        Features the tree may use (``colsample_bytree``); ``None`` means all.
    colsample_bynode : float
        Fraction of the tree's features drawn for each node's split search.
    rng : numpy Generator
        Used only for ``colsample_bynode``.
    buffers : GrowerBuffers or None
        Scratch arrays shared by the trees of one fit.
    bin_thresholds : list of ndarray or None
        The binner's thresholds, to give each split a raw-value threshold.
    hessians_are_constant : bool
        All hessians equal ``hessians[0]``: histograms skip summing them.
    is_categorical : ndarray of uint8 or None
        Categorical features (the binner's ``is_categorical_``): they get set
        splits. Such a node's ``num_threshold`` is the index of its bitset in
        :attr:`cat_bitsets` (``bin_threshold`` is 0).
    max_cat_to_onehot, cat_smooth, cat_l2, min_data_per_group, max_cat_threshold
        LightGBM's safeguards of the categorical split search (see
        ``_splitting.find_best_split``).
    reg_alpha : float
        L1 regularisation: gradient sums are soft-thresholded by it in gains
        and leaf values (LightGBM's ``lambda_l1``).
    monotonic_cst : ndarray of int8 or None
        -1/0/1 per feature (scikit-learn's HistGradientBoosting semantics):
        a split on a constrained feature must order its children's values;
        the children of such a split get the bounds ``[lower, mid]`` and
        ``[mid, upper]`` (``mid`` the mean of their values; swapped for -1),
        the children of any other split inherit the node's bounds, and every
        value is clipped to its node's bounds. So every tree is monotonic.
    interaction_cst : list of array-like of int, or None
        Groups of features that may interact: a path may only split on the
        features of one group that holds every feature already on it.

    Attributes
    ----------
    cat_bitsets : ndarray of uint32, shape (n_categorical_splits, 8)
        After :meth:`grow`: the left sets of the tree's categorical splits.
    """

    def __init__(self, X_binned, gradients, hessians, n_bins_non_missing,
                 missing_values_bin_idx, *, sample_indices=None, feature_mask=None,
                 max_leaf_nodes=31, max_depth=None, min_samples_leaf=20,
                 min_child_weight=1e-3, min_split_gain=0.0, l2_regularization=0.0,
                 colsample_bynode=1.0, rng=None, n_threads=1, buffers=None,
                 bin_thresholds=None, hessians_are_constant=False, is_categorical=None,
                 max_cat_to_onehot=4, cat_smooth=10.0, cat_l2=10.0, min_data_per_group=100,
                 max_cat_threshold=32, reg_alpha=0.0, monotonic_cst=None,
                 interaction_cst=None):
        self.X_binned = X_binned
        self.monotonic_cst = (
            None if monotonic_cst is None or not np.any(monotonic_cst)
            else np.ascontiguousarray(monotonic_cst, dtype=np.int8))
        self.group_masks = None
        if interaction_cst is not None:
            self.group_masks = np.zeros((len(interaction_cst), X_binned.shape[1]), dtype=bool)
            for k, group in enumerate(interaction_cst):
                self.group_masks[k, np.asarray(list(group), dtype=np.intp)] = True
        self.leaf_bounds = {}
        self.is_categorical = (
            None if is_categorical is None or not np.any(is_categorical)
            else np.ascontiguousarray(is_categorical, dtype=np.uint8))
        self.cat_options = dict(max_cat_to_onehot=max_cat_to_onehot, cat_smooth=cat_smooth,
                                cat_l2=cat_l2, min_data_per_group=min_data_per_group,
                                max_cat_threshold=max_cat_threshold)
        self.reg_alpha = reg_alpha
        self._cat_bitsets = []
        self.hessians_are_constant = hessians_are_constant
        self.bin_thresholds = bin_thresholds
        self.gradients = gradients
        self.hessians = hessians
        self.n_bins_non_missing = n_bins_non_missing
        self.missing_values_bin_idx = missing_values_bin_idx
        n_samples, n_features = X_binned.shape
        self.all_rows = sample_indices is None
        if buffers is None:
            buffers = GrowerBuffers(n_samples)
        self.buffers = buffers
        if sample_indices is None:
            self.partition = buffers.partition
            self.partition[:] = buffers.arange
        else:
            self.partition = np.ascontiguousarray(sample_indices, dtype=np.uint32)
        self.feature_mask = (
            np.ones(n_features, dtype=np.uint8) if feature_mask is None
            else np.ascontiguousarray(feature_mask, dtype=np.uint8)
        )
        self.max_leaf_nodes = max_leaf_nodes if max_leaf_nodes is not None else np.inf
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.min_child_weight = min_child_weight
        self.min_split_gain = min_split_gain
        self.l2_regularization = l2_regularization
        self.colsample_bynode = colsample_bynode
        self.rng = rng
        self.n_threads = n_threads
        self.n_features = n_features
        self.n_bins = missing_values_bin_idx + 1
        self.hist_offsets = histogram_offsets(n_bins_non_missing)
        self.n_records = int(self.hist_offsets[-1])
        self.sparse = buffers.sparse_columns(X_binned, self.hist_offsets)
        self._kernels = None

    # -- helpers --------------------------------------------------------------
    def _leaf_value(self, sum_g, sum_h, lower=-np.inf, upper=np.inf, extra_l2=0.0):
        a = self.reg_alpha
        if a > 0:  # soft-thresholding (LightGBM's ThresholdL1)
            sum_g = np.sign(sum_g) * max(abs(sum_g) - a, 0.0)
        return min(max(-sum_g / (sum_h + self.l2_regularization + extra_l2), lower), upper)

    @property
    def cat_bitsets(self):
        if not self._cat_bitsets:
            return np.zeros((0, _splitting.CATEGORY_BITSET_WORDS), dtype=np.uint32)
        return np.stack(self._cat_bitsets)

    def _node_mask(self, node=None):
        mask = self._colsample_mask()
        if self.group_masks is None or node is None:
            return mask
        allowed = self.group_masks[node.groups].any(axis=0)
        return np.ascontiguousarray(mask & allowed, dtype=np.uint8)

    def _colsample_mask(self):
        if self.colsample_bynode >= 1.0:
            return self.feature_mask
        allowed = np.flatnonzero(self.feature_mask)
        n_draw = max(1, int(round(self.colsample_bynode * allowed.size)))
        mask = np.zeros(self.n_features, dtype=np.uint8)
        mask[self.rng.choice(allowed, n_draw, replace=False)] = 1
        return mask

    def _take_histogram(self):
        return self.buffers.take_histogram(self.n_records)

    def _partial(self):
        return self.buffers.partial_histograms(self.n_records, self.n_features, self.n_bins)

    def _missing_count(self, hist, feature):
        """Rows of ``hist``'s node with a missing value of ``feature``."""
        return hist[self.hist_offsets[feature + 1] - 1]["count"]

    def feature_records(self, feature_mask):
        """Which records of a histogram belong to the features of ``feature_mask``."""
        return np.repeat(np.asarray(feature_mask, dtype=bool), np.diff(self.hist_offsets))

    def _build_hist(self, node):
        hist = self._take_histogram()
        if isinstance(self.X_binned, SparseBinned):
            if node.n_samples:
                self._split_kernels().build(node.start, node.stop, hist,
                                            self.all_rows and node.idx == 0)
            return hist
        rows = self.partition[node.start:node.stop]
        _histogram.build_histogram(
            self.X_binned, rows, self.gradients, self.hessians, self.feature_mask,
            self.all_rows and node.idx == 0, self.hessians_are_constant,
            threads_for(rows.size * self.n_features, self.n_threads), hist,
            self._partial(), offsets=self.hist_offsets, sparse=self.sparse,
        )
        return hist

    def _free_hist(self, node):
        if node.hist is not None:
            self.buffers.give_histogram(node.hist)
            node.hist = None

    def _can_split(self, node):
        if node.n_samples < 2 * self.min_samples_leaf:
            return False
        if self.max_depth is not None and node.depth >= self.max_depth:
            return False
        return True

    def _find_split(self, node):
        node.split = _splitting.find_best_split(
            node.hist, node.sum_g, node.sum_h, node.n_samples, self.n_bins_non_missing,
            self._node_mask(node), self.missing_values_bin_idx, self.l2_regularization,
            self.min_samples_leaf, self.min_child_weight, self.min_split_gain,
            threads_for(self.n_records * 4, self.n_threads),
            self.is_categorical, l1_regularization=self.reg_alpha, **self.cat_options,
            monotonic_cst=self.monotonic_cst, lower_bound=node.lower, upper_bound=node.upper,
            offsets=self.hist_offsets,
        )

    # -- growth ---------------------------------------------------------------
    def grow(self):
        """Grow the tree.

        Returns
        -------
        nodes : ndarray of NODE_DTYPE
            Node 0 is the root.
        leaves : list of (node_index, start, stop)
            Each leaf's slice of :attr:`partition` (its training rows).
        """
        n_rows, sum_g, sum_h = self._root_sums()
        if n_rows == 0:
            raise ValueError("Cannot grow a tree on zero samples.")
        nodes = [self._new_node_record(0, n_rows, sum_h, self._leaf_value(sum_g, sum_h))]
        groups = (None if self.group_masks is None
                  else np.ones(self.group_masks.shape[0], dtype=bool))
        root = _Node(0, 0, n_rows, 0, sum_g, sum_h, nodes[0][_VALUE], groups=groups)
        kernels = None if self._overrides_steps() else self._node_kernels()
        heap = []
        if self._can_split(root) and self.max_leaf_nodes > 1:
            if kernels is None:
                root.hist = self._build_hist(root)
                self._find_split(root)
            else:
                root.hist = self._take_histogram()
                kernels.build(0, n_rows, root.hist, self.all_rows)
                root.split = kernels.find(root.hist, sum_g, sum_h, n_rows,
                                          self._node_mask(root), root.lower, root.upper)
            if root.split is not None:
                heapq.heappush(heap, (-root.split[0], 0, root))
        leaves_final = [] if heap else [root]
        if kernels is None:
            self._grow_loop(None, heap, nodes, leaves_final)
        elif heap:
            # the tree's threads stay in one parallel region for all its splits
            kernels.run_in_team(lambda: self._grow_loop(kernels, heap, nodes, leaves_final))
        leaves_final.extend(item[2] for item in heap)
        for leaf in leaves_final:
            self._free_hist(leaf)
            self.leaf_bounds[leaf.idx] = (leaf.lower, leaf.upper)
        nodes_arr = np.array([tuple(rec) for rec in nodes], dtype=NODE_DTYPE)
        leaves = sorted((leaf.idx, leaf.start, leaf.stop) for leaf in leaves_final)
        return nodes_arr, leaves

    def _grow_loop(self, kernels, heap, nodes, leaves_final):
        """Split the best node of ``heap`` until it is empty or the tree has
        ``max_leaf_nodes`` leaves; finished leaves go to ``leaves_final``."""
        n_leaves = len(heap) + len(leaves_final)
        while heap and n_leaves < self.max_leaf_nodes:
            _, _, node = heapq.heappop(heap)
            n_leaves += 1
            room = n_leaves < self.max_leaf_nodes
            if kernels is None:
                left, right = self._split(node, nodes)
                self._prepare_children(node, left, right, room)
            else:
                left, right = self._split_fused(kernels, node, nodes, room)
            for child in (left, right):
                if child.split is not None:
                    heapq.heappush(heap, (-child.split[0], child.idx, child))
                else:
                    leaves_final.append(child)
            self._free_hist(node)  # the parent's histogram is reused
            self._free_unreachable(heap, self.max_leaf_nodes - n_leaves)

    def _free_unreachable(self, heap, splits_left):
        """Free the histograms of the queued nodes that will never be split.

        Nodes are split in heap order, one per split left; a node with at
        least ``splits_left`` others ahead of it cannot be reached, and stays
        so (a node pushed later can only get ahead of it, and each split
        removes one node ahead and one split). It stays queued, as a leaf of
        the tree; only its histogram, needed for its children, goes back to
        the pool. So a tree holds about as many histograms as it has splits
        left, not one per queued node (a 31-leaf tree: about half as many).
        """
        if len(heap) <= splits_left:
            return
        reachable = {item[1] for item in heapq.nsmallest(int(splits_left), heap)}
        for _, idx, node in heap:
            if idx not in reachable:
                self._free_hist(node)

    # -- the three steps that read rows (a distributed grower overrides them;
    # dartboost.dask sums the histograms of every worker's rows) -------------
    def _root_sums(self):
        """``(n_rows, sum_gradients, sum_hessians)`` of the rows grown on."""
        rows = self.partition
        g = self.gradients if self.all_rows else self.gradients[rows]
        h = self.hessians if self.all_rows else self.hessians[rows]
        return rows.size, float(np.sum(g, dtype=np.float64)), float(np.sum(h, dtype=np.float64))

    def _partition_rows(self, node, feature, bin_idx, missing_left, n_left=None, bitset=None):
        """Reorder ``node``'s rows, those going left first; return how many go
        left (checked against ``n_left``, the histogram's count, if given).
        ``bitset``: the left set of a categorical split (else ``None``)."""
        if isinstance(self.X_binned, SparseBinned):
            # (the fused step without its histograms: a partition only)
            found = self._split_kernels().split(
                node.start, node.stop, feature, bin_idx, missing_left, bitset, None, None,
                None, True, 0., 0., -np.inf, np.inf, None, 0., 0., -np.inf, np.inf, None,
                -1)[0]
            assert n_left is None or found == n_left, (found, n_left)
            return found
        rows = self.partition[node.start:node.stop]
        found = _splitting.split_indices(
            self.X_binned, rows, feature, bin_idx, missing_left,
            self.missing_values_bin_idx, self.buffers.left, self.buffers.right,
            threads_for(rows.size * PARTITION_WORK_PER_ROW, self.n_threads), bitset,
        )
        assert n_left is None or found == n_left, (found, n_left)
        return found

    def _new_node_record(self, depth, count, sum_h, value):
        # a list in NODE_DTYPE's field order (cheaper to fill than a numpy
        # record; the tree's array is built once at the end of grow())
        return [value, count, -1, 0.0, 0, 0, 0, 0.0, depth, 1, 0, sum_h]

    def _missing_left(self, node):
        """Where ``node``'s split sends missing values."""
        _, feature, _, missing_left, _, _, nl, _ = node.split
        if self._missing_count(node.hist, feature) == 0:
            # No missing value reached this node in training: send future
            # missing values where most training rows went. (No row here is
            # missing, so the partition is unaffected.)
            missing_left = nl >= node.n_samples - nl
        return missing_left

    def _split(self, node, nodes):
        _, feature, bin_idx, _, _, _, nl, bitset = node.split
        missing_left = self._missing_left(node)
        if bitset is None:
            self._partition_rows(node, feature, bin_idx, missing_left, nl)
        else:
            self._partition_rows(node, feature, bin_idx, missing_left, nl, bitset=bitset)
        return self._children(node, nodes, missing_left)

    def _children(self, node, nodes, missing_left):
        """Record ``node``'s split in ``nodes``; return its two children (rows
        not partitioned yet)."""
        gain, feature, bin_idx, _, gl, hl, nl, bitset = node.split
        gr, hr = node.sum_g - gl, node.sum_h - hl
        rec = nodes[node.idx]
        rec[_IS_LEAF] = 0
        rec[_FEATURE] = feature
        rec[_BIN_THRESHOLD] = bin_idx
        rec[_MISSING_LEFT] = int(missing_left)
        rec[_GAIN] = gain
        extra_l2 = 0.0
        if bitset is not None:
            # a set split: num_threshold indexes the tree's bitsets; a
            # many-vs-many one (bin_idx 1) regularises its children by cat_l2
            extra_l2 = self.cat_options["cat_l2"] if bin_idx == 1 else 0.0
            rec[_BIN_THRESHOLD] = 0
            rec[_NUM_THRESHOLD] = float(len(self._cat_bitsets))
            self._cat_bitsets.append(bitset)
        else:
            thresholds = (self.bin_thresholds[feature] if self.bin_thresholds is not None
                          else None)
            rec[_NUM_THRESHOLD] = (
                float(thresholds[bin_idx])
                if thresholds is not None and bin_idx < thresholds.size else np.inf
            )
        left_idx, right_idx = len(nodes), len(nodes) + 1
        rec[_LEFT], rec[_RIGHT] = left_idx, right_idx
        depth = node.depth + 1
        vl = self._leaf_value(gl, hl, node.lower, node.upper, extra_l2)
        vr = self._leaf_value(gr, hr, node.lower, node.upper, extra_l2)
        nodes.append(self._new_node_record(depth, nl, hl, vl))
        nodes.append(self._new_node_record(depth, node.n_samples - nl, hr, vr))
        bounds_l = bounds_r = (node.lower, node.upper)
        sign = 0 if self.monotonic_cst is None else int(self.monotonic_cst[feature])
        if sign:
            mid = (vl + vr) / 2
            low, high = (node.lower, mid), (mid, node.upper)
            bounds_l, bounds_r = (low, high) if sign > 0 else (high, low)
        groups = None
        if node.groups is not None:
            groups = node.groups & self.group_masks[:, feature]
        left = _Node(left_idx, node.start, node.start + nl, depth, gl, hl, vl, *bounds_l,
                     groups=groups)
        right = _Node(right_idx, node.start + nl, node.stop, depth, gr, hr, vr, *bounds_r,
                      groups=groups)
        return left, right

    # -- the fused path ---------------------------------------------------------
    _STEPS = ("_root_sums", "_build_hist", "_partition_rows", "_find_split", "_split",
              "_prepare_children")

    def _overrides_steps(self):
        """Whether a subclass replaced a step the fused path does not call."""
        cls = type(self)
        return any(getattr(cls, name) is not getattr(TreeGrower, name) for name in self._STEPS)

    def _split_kernels(self):
        """The compiled steps the step-by-step path of a SparseBinned matrix
        calls (made once per tree)."""
        if self._kernels is None:
            self._kernels = self._node_kernels()
        return self._kernels

    def _node_kernels(self):
        """The compiled steps of this tree (:class:`_grow.NodeKernels`)."""
        X, dense_features = self.X_binned, None
        if isinstance(X, SparseBinned):
            # its columns are the dense features; the row-major copy holds them all
            X, dense_features = X.dense, X.dense_features
            columns = dense_features
            X_rows = self.buffers.row_major(X)
        else:
            # the row-major copy serves the features read from the binned matrix
            columns = (None if self.sparse is None
                       else np.flatnonzero(self.sparse.is_sparse == 0))
            X_rows = self.buffers.row_major(X, columns)
        return _grow.NodeKernels(
            X, X_rows, self.gradients,
            self.hessians, self.partition, self.buffers.left, self.buffers.right,
            self._partial(), self.feature_mask,
            self.n_bins_non_missing, self.missing_values_bin_idx, self.l2_regularization,
            self.min_samples_leaf, self.min_child_weight, self.min_split_gain,
            self.is_categorical, self.monotonic_cst, self.reg_alpha,
            hessians_are_constant=self.hessians_are_constant, n_threads=self.n_threads,
            offsets=self.hist_offsets, sparse=self.sparse, rows_features=columns,
            dense_features=dense_features, **self.cat_options)

    def _split_fused(self, kernels, node, nodes, room):
        """``_split`` then ``_prepare_children`` in one compiled call: the same
        children, histograms, splits and ``colsample_bynode`` draws."""
        _, feature, bin_idx, _, _, _, nl, bitset = node.split
        missing_left = self._missing_left(node)
        left, right = self._children(node, nodes, missing_left)
        search_left = room and self._can_split(left)
        search_right = room and self._can_split(right)
        small_is_left = left.n_samples <= right.n_samples
        small_hist = large_hist = None
        parent_hist = node.hist
        if search_left or search_right:
            small_hist = self._take_histogram()
            if self._can_split(right if small_is_left else left):
                # the parent's histogram becomes the larger child's, in place
                large_hist, node.hist = parent_hist, None
        # masks in the order the step-by-step path draws them: left, right
        mask_left = self._node_mask(left) if search_left else None
        mask_right = self._node_mask(right) if search_right else None
        found, left.split, right.split = kernels.split(
            node.start, node.stop, feature, bin_idx, missing_left, bitset, parent_hist,
            small_hist, large_hist, small_is_left, left.sum_g, left.sum_h, left.lower,
            left.upper, mask_left, right.sum_g, right.sum_h, right.lower, right.upper,
            mask_right, nl)
        assert found == nl, (found, nl)
        left.hist, right.hist = (small_hist, large_hist) if small_is_left else (large_hist,
                                                                               small_hist)
        for child in (left, right):
            if child.split is None:
                self._free_hist(child)
        return left, right

    def _prepare_children(self, parent, left, right, room):
        """Histograms and best splits of the two children, if they may split."""
        if not room:
            return
        split_left, split_right = self._can_split(left), self._can_split(right)
        if not (split_left or split_right):
            return
        small, large = (left, right) if left.n_samples <= right.n_samples else (right, left)
        small.hist = self._build_hist(small)
        if self._can_split(large):
            # the parent's histogram becomes the larger child's, in place
            large.hist, parent.hist = parent.hist, None
            _histogram.subtract_histograms(
                large.hist, small.hist, self.feature_mask,
                threads_for(self.n_records, self.n_threads), large.hist,
                offsets=self.hist_offsets,
            )
        for child in (left, right):
            if child.hist is not None and self._can_split(child):
                self._find_split(child)
            if child.split is None:
                self._free_hist(child)


class GrowerBuffers:
    """Per-fit scratch arrays reused by every tree (no allocation per node).

    Histograms come from a free list: a node's histogram goes back when the
    node is split or becomes a leaf, so a fit holds about as many as the
    largest frontier of splittable nodes, allocated once.
    """

    def __init__(self, n_samples):
        self.arange = np.arange(n_samples, dtype=np.uint32)
        self.partition = np.empty(n_samples, dtype=np.uint32)
        self.left = np.empty(n_samples, dtype=np.uint32)
        self.right = np.empty(n_samples, dtype=np.uint32)
        self._free_histograms = []
        self._partial = None
        self._rows_of = None
        self._rows = None
        self._sparse_of = None
        self._sparse = None

    def take_histogram(self, n_records):
        """An uninitialised flat histogram of ``n_records`` records."""
        while self._free_histograms:
            hist = self._free_histograms.pop()
            if hist.shape == (n_records,):
                return hist
        return np.empty(n_records, dtype=HISTOGRAM_DTYPE)

    def give_histogram(self, hist):
        """Return a histogram no node uses any more."""
        self._free_histograms.append(hist)

    def row_major(self, X_binned, columns=None):
        """A row-major copy of ``X_binned``'s ``columns`` (None: all; made
        once per fit), which the histograms of nodes with scattered rows
        read: one cache line gives a row's bins of many features. ``None``
        for fewer than two columns."""
        n_columns = X_binned.shape[1] if columns is None else len(columns)
        if n_columns < 2:
            return None
        key = None if columns is None else np.asarray(columns, dtype=np.intp).tobytes()
        if self._rows_of is None or self._rows_of[0] is not X_binned \
                or self._rows_of[1] != key:
            self._rows = None  # (the old copy goes before the new one is made)
            self._rows = np.ascontiguousarray(
                X_binned if columns is None else X_binned[:, np.asarray(columns)])
            self._rows_of = (X_binned, key)
        return self._rows

    def sparse_columns(self, X_binned, offsets):
        """The mostly-default features of ``X_binned`` as their entries
        (:class:`~dartboost._sparse_columns.SparseColumns`, made once per
        fit), or None when it has none."""
        if isinstance(X_binned, SparseBinned):
            if not np.array_equal(X_binned.offsets, offsets):
                raise ValueError("the matrix's entries are in another histogram layout")
            return X_binned.columns
        key = (X_binned, offsets.tobytes())
        if self._sparse_of is None or self._sparse_of[0] is not X_binned \
                or self._sparse_of[1] != key[1]:
            self._sparse = SparseColumns.of(X_binned, offsets)
            self._sparse_of = key
        return self._sparse

    def partial_histograms(self, n_records, n_features, n_bins):
        """Scratch for the per-chunk histograms of large nodes, each of
        ``n_records`` records. The chunk count (at most
        :data:`MAX_ROW_CHUNKS`) is what a ``(n_features, n_bins)`` histogram
        per chunk fits in :data:`PARTIAL_HISTOGRAM_BYTES`: it depends only on
        the shape, so the chunking, hence every sum, is the same for any
        thread count (and the same as before histograms were sized per
        feature); the scratch itself is ``n_records`` per chunk, at most that
        many bytes."""
        max_chunks = int(min(MAX_ROW_CHUNKS, max(
            1, PARTIAL_HISTOGRAM_BYTES // (n_features * n_bins * HISTOGRAM_DTYPE.itemsize))))
        if self._partial is None or self._partial.shape != (max_chunks, n_records):
            self._partial = np.empty((max_chunks, n_records), dtype=HISTOGRAM_DTYPE)
        return self._partial

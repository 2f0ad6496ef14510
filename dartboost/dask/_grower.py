"""The engine's :class:`~dartboost._grower.TreeGrower`, with its rows on the workers.

Only the three steps that read rows differ: root sums and node histograms
are the per-partition ones summed in partition order, and a row partition is
recorded and sent with the next histogram request. Which node to split, split
finding, histogram subtraction and the tree record are the local grower's own
code, run once on the client.

Fewer round trips: each histogram request also carries *speculative* splits
of the best nodes still waiting in the grower's queue (their splits are
already decided, and a queued node is split later unless the tree runs out of
leaves first) and asks for their smaller children's histograms too; when the
grower reaches such a node its child's histogram is already on the client.
A node's rows, and so every histogram sum, do not depend on when its split
is applied, so the tree is the one a local fit grows; a speculation that the
grower never uses costs one histogram of work and bytes.
"""
import numpy as np

from .._common import X_BINNED_DTYPE
from .._grower import GrowerBuffers, TreeGrower, _Node
from ._worker import histograms
from ._distributed import sum_histograms

#: Queued nodes split speculatively per histogram request (each adds one
#: histogram per partition to the request's reply).
SPECULATIVE_SPLITS = 3


class DistributedTreeGrower(TreeGrower):
    """Grow one tree from the histograms of the workers' rows.

    Parameters
    ----------
    rounds : Rounds
    root_sums : list of (n_rows, sum_g, sum_h)
        Per partition, from ``begin_tree``.
    n_features : int
    speculative_splits : int, default=None
        Queued nodes split ahead per request (0: one request per histogram;
        None: :data:`SPECULATIVE_SPLITS`).
    **params
        The local grower's parameters (no data arrays).
    """

    def __init__(self, rounds, root_sums, n_features, n_bins_non_missing,
                 missing_values_bin_idx, speculative_splits=None, **params):
        no_rows = np.empty((0, n_features), dtype=X_BINNED_DTYPE, order="F")
        no_values = np.empty(0, dtype=np.float32)
        super().__init__(no_rows, no_values, no_values, n_bins_non_missing,
                         missing_values_bin_idx, buffers=GrowerBuffers(0), **params)
        self.rounds = rounds
        self.root = root_sums
        self.speculative_splits = (SPECULATIVE_SPLITS if speculative_splits is None
                                   else speculative_splits)
        self.n_requests = 0
        # the workers name nodes by keys: a node's grower index once the
        # grower has split its parent, a negative key for a speculative child
        self.key = {0: 0}
        self.next_spec_key = -1
        # (parent key, feature, bin, missing_left, left key, right key, bitset)
        self.pending = []
        self.expected = []  # the histogram's left count of each pending split
        self.queued = {}  # grower index -> node with a split, not split yet
        self.speculated = {}  # grower index -> (left key, right key)
        self.ready = {}  # worker key -> summed histogram (speculated)
        self.nodes = None
        self.children = None

    def _root_sums(self):
        n = sum(int(r[0]) for r in self.root)
        sum_g = sum_h = 0.0
        for _, g, h in self.root:  # partition order
            sum_g += g
            sum_h += h
        return n, sum_g, sum_h

    def _find_split(self, node):
        super()._find_split(node)
        if node.split is not None:
            self.queued[node.idx] = node

    def _split(self, node, nodes):
        self.queued.pop(node.idx, None)
        self.nodes = nodes
        self.children = (len(nodes), len(nodes) + 1)  # the grower appends them next
        return super()._split(node, nodes)

    def _partition_rows(self, node, feature, bin_idx, missing_left, n_left=None, bitset=None):
        left, right = self.children
        if node.idx in self.speculated:  # already applied on the workers
            self.key[left], self.key[right] = self.speculated.pop(node.idx)
        else:
            self.key[left], self.key[right] = left, right
            self.pending.append((self.key[node.idx], int(feature), int(bin_idx),
                                 int(missing_left), left, right, bitset))
            self.expected.append(n_left)
        return n_left

    def _speculate(self):
        """Splits of the best queued nodes whose children may need a
        histogram; ``[(node, small child's key)]``, sent with the request."""
        n_leaves = (len(self.nodes) + 1) // 2
        room = self.max_leaf_nodes - n_leaves - 1  # splits left after the current one
        count = int(min(self.speculative_splits, max(room, 0)))
        best = sorted((n for i, n in self.queued.items() if i not in self.speculated),
                      key=lambda n: (-n.split[0], n.idx))
        out = []
        for node in best[:count]:
            if node.hist is None:
                continue  # out of the grower's reach: it will not be split
            gain, feature, bin_idx, missing_left, gl, hl, nl, bitset = node.split[:8]
            nr = node.n_samples - nl
            depth = node.depth + 1
            left = _Node(-1, 0, nl, depth, gl, hl, 0.0)
            right = _Node(-1, 0, nr, depth, node.sum_g - gl, node.sum_h - hl, 0.0)
            if not (self._can_split(left) or self._can_split(right)):
                continue  # the grower will build no histogram for them
            if self._missing_count(node.hist, feature) == 0:
                missing_left = nl >= nr  # as TreeGrower._split decides
            keys = (self.next_spec_key, self.next_spec_key - 1)
            self.next_spec_key -= 2
            self.speculated[node.idx] = keys
            self.pending.append((self.key[node.idx], int(feature), int(bin_idx),
                                 int(missing_left), *keys, bitset))
            self.expected.append(nl)
            out.append(keys[0] if nl <= nr else keys[1])
        return out

    def _build_hist(self, node):
        key = self.key[node.idx]
        if key in self.ready:
            return self.ready.pop(key)
        wanted = [key]
        if self.nodes is not None and self.speculative_splits:
            wanted += self._speculate()
        self.n_requests += 1
        results = self.rounds.run(histograms, self.pending, wanted)
        hists = [None] * self.rounds.n_partitions
        counts = [None] * self.rounds.n_partitions
        for indices, (worker_hists, worker_counts) in results:
            for i, index in enumerate(indices):
                hists[index] = worker_hists[i]
                counts[index] = worker_counts[i]
        for j, expected in enumerate(self.expected):
            found = sum(part[j] for part in counts)
            if expected is not None and found != expected:
                raise RuntimeError(f"distributed split {self.pending[j]}: the workers sent "
                                   f"{found} rows left, the histograms counted {expected}")
        self.pending, self.expected = [], []
        for j, wanted_key in enumerate(wanted[1:], start=1):
            self.ready[wanted_key] = sum_histograms([h[j] for h in hists])
        return sum_histograms([h[0] for h in hists])

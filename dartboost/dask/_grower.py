"""The engine's :class:`~dartboost._grower.TreeGrower`, with its rows on the workers.

Only the three steps that read rows differ: root sums and node histograms
are the per-partition ones summed in partition order, and a row partition is
recorded and sent with the next histogram request (one round trip per
histogram). Which node to split, split finding, histogram subtraction and the
tree record are the local grower's own code, run once on the client.
"""
import numpy as np

from .._common import X_BINNED_DTYPE
from .._grower import GrowerBuffers, TreeGrower
from ._worker import histograms
from ._distributed import sum_histograms


class DistributedTreeGrower(TreeGrower):
    """Grow one tree from the histograms of the workers' rows.

    Parameters
    ----------
    rounds : Rounds
    root_sums : list of (n_rows, sum_g, sum_h)
        Per partition, from ``begin_tree``.
    n_features : int
    **params
        The local grower's parameters (no data arrays).
    """

    def __init__(self, rounds, root_sums, n_features, n_bins_non_missing,
                 missing_values_bin_idx, **params):
        no_rows = np.empty((0, n_features), dtype=X_BINNED_DTYPE, order="F")
        no_values = np.empty(0, dtype=np.float32)
        super().__init__(no_rows, no_values, no_values, n_bins_non_missing,
                         missing_values_bin_idx, buffers=GrowerBuffers(0), **params)
        self.rounds = rounds
        self.root = root_sums
        self.pending = []  # (parent, feature, bin, missing_left) not yet sent
        self.expected = []  # the histogram's left count of each pending split

    def _root_sums(self):
        n = sum(int(r[0]) for r in self.root)
        sum_g = sum_h = 0.0
        for _, g, h in self.root:  # partition order
            sum_g += g
            sum_h += h
        return n, sum_g, sum_h

    def _partition_rows(self, node, feature, bin_idx, missing_left, n_left=None):
        self.pending.append((node.idx, int(feature), int(bin_idx), int(missing_left)))
        self.expected.append(n_left)
        return n_left

    def _build_hist(self, node):
        results = self.rounds.run(histograms, self.pending, node.idx)
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
        return sum_histograms(hists)

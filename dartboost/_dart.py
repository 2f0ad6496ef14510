"""The DART policy: which trees to drop, and how to renormalise.

One small unit, as LightGBM keeps ``dart.hpp``. The boosting loop asks
:meth:`DartPolicy.select_dropped` for the iterations to drop before growing a
tree and :meth:`DartPolicy.normalize` for the new tree's weight and the factor
applied to the dropped trees afterwards (Rashmi & Gilad-Bachrach, 2015).

Weights are per *iteration* (for multiclass, the K trees of one iteration are
dropped and rescaled together). Every change of weights is recorded in a
:class:`WeightLog`, so the weights the model had after any iteration can be
replayed exactly: this is what early stopping and ``staged_predict`` use.

:class:`DartScheme` is DART as a boosting scheme (the contract is in
:mod:`dartboost._mart`): it asks the policy what to drop, removes the dropped
trees from the scores of every data set before the new trees are grown, and
adds them back rescaled afterwards.
"""
import numpy as np


class DartPolicy:
    """Dropout and normalisation rules of DART.

    Parameters
    ----------
    learning_rate : float
        Shrinkage ``eta``.
    drop_rate : float
        Probability of dropping each previous iteration (``uniform``), or the
        mean drop probability (``weighted``).
    skip_drop : float
        Probability of skipping dropout for an iteration (a plain MART step).
    max_drop : int
        At most this many iterations are dropped; a larger draw is cut down to a
        *uniformly random* subset of this size (LightGBM keeps the first ones it
        meets, which biases drops toward old trees). ``<= 0`` means no limit.
    one_drop : bool
        If the draw is empty, drop one iteration anyway ("binomial-plus-one").
    sample_type : {"uniform", "weighted"}
        ``weighted`` drops iteration ``i`` with probability
        ``min(1, drop_rate * n * w_i / sum(w))`` (XGBoost's rule).
    normalize_type : {"tree", "forest"}
        ``tree``: new weight ``eta / (k + eta)``, dropped trees scaled by
        ``k / (k + eta)`` (XGBoost's ``tree``, LightGBM's ``xgboost_dart_mode``).
        ``forest``: new weight ``eta / (1 + eta)``, dropped trees scaled by
        ``1 / (1 + eta)``. With nothing dropped the new weight is ``eta``.
    """

    def __init__(self, learning_rate=0.1, drop_rate=0.1, skip_drop=0.5, max_drop=50,
                 one_drop=False, sample_type="uniform", normalize_type="tree"):
        self.learning_rate = learning_rate
        self.drop_rate = drop_rate
        self.skip_drop = skip_drop
        self.max_drop = max_drop
        self.one_drop = one_drop
        self.sample_type = sample_type
        self.normalize_type = normalize_type

    def select_dropped(self, weights, rng):
        """Indices of the iterations to drop, sorted.

        Parameters
        ----------
        weights : ndarray of shape (n_iterations,)
            Current iteration weights.
        rng : numpy.random.Generator
        """
        n = weights.shape[0]
        if n == 0 or rng.random() < self.skip_drop:
            return np.empty(0, dtype=np.int64)
        if self.sample_type == "weighted":
            total = weights.sum()
            p = np.minimum(1.0, self.drop_rate * n * weights / total) if total > 0 else \
                np.full(n, self.drop_rate)
        else:
            p = np.full(n, self.drop_rate)
        dropped = np.flatnonzero(rng.random(n) < p)
        if dropped.size == 0 and self.one_drop:
            if self.sample_type == "weighted" and weights.sum() > 0:
                dropped = np.array([rng.choice(n, p=weights / weights.sum())])
            else:
                dropped = np.array([rng.integers(n)])
        if 0 < self.max_drop < dropped.size:
            dropped = np.sort(rng.choice(dropped, self.max_drop, replace=False))
        return dropped.astype(np.int64)

    def normalize(self, n_dropped):
        """``(new_weight, dropped_scale)`` after dropping ``n_dropped`` iterations."""
        eta = self.learning_rate
        k = n_dropped
        if k == 0:
            return eta, 1.0
        if self.normalize_type == "forest":
            return eta / (1.0 + eta), 1.0 / (1.0 + eta)
        return eta / (k + eta), k / (k + eta)


class DartScheme:
    """DART's score surgery around one iteration (LightGBM's ``dart.hpp``).

    ``F -= D`` with ``D = sum_{i in dropped} w_i f_i`` before the gradients,
    then ``F += scale * D`` once the policy has normalised; the loop adds the
    new trees with ``new_weight``. ``D`` is computed from the keepers' cached
    leaf ids (a gather per tree), which is why this scheme keeps them.

    Parameters
    ----------
    policy : DartPolicy
    n_trees_per_iteration : int
    """

    keeps_leaf_ids = True

    def __init__(self, policy, n_trees_per_iteration):
        self.policy = policy
        self.n_trees_per_iteration = n_trees_per_iteration
        self._dropped = np.empty(0, dtype=np.int64)
        self._removed = []

    def begin_iteration(self, weights, rng, keepers):
        """Select the dropped iterations; remove them from every keeper."""
        K = self.n_trees_per_iteration
        dropped = self.policy.select_dropped(np.asarray(weights, dtype=np.float64), rng)
        self._dropped, self._removed = dropped, []
        if dropped.size:
            for keeper in keepers:
                removed = np.zeros_like(keeper.raw)
                for i in dropped:
                    for k in range(K):
                        keeper.add_contribution(i * K + k, weights[i], removed[k])
                keeper.raw -= removed
                self._removed.append(removed)
        return dropped

    def end_iteration(self, keepers):
        """``(new_weight, scale)``; the dropped trees are back, rescaled."""
        new_weight, scale = self.policy.normalize(self._dropped.size)
        for keeper, removed in zip(keepers, self._removed):
            keeper.raw += scale * removed
        self._removed = []
        return new_weight, scale


class WeightLog:
    """Append-only history of the iteration weights.

    Entry ``t`` says: iteration ``t`` was added with weight ``new_weight[t]``
    after the iterations ``dropped[t]`` were multiplied by ``scale[t]``.
    Replaying the first ``t`` entries gives the weights exactly as they were
    after iteration ``t`` (the same multiplications in the same order).
    """

    def __init__(self):
        self.new_weight = []
        self.scale = []
        self.dropped = []

    def __len__(self):
        return len(self.new_weight)

    def append(self, dropped, scale, new_weight):
        self.dropped.append(np.asarray(dropped, dtype=np.int64))
        self.scale.append(float(scale))
        self.new_weight.append(float(new_weight))

    @staticmethod
    def apply(weights, dropped, scale, new_weight):
        """Apply one entry in place to ``weights`` (a list), the single
        definition of a DART weight update shared by training and replay."""
        for i in dropped:
            weights[i] = weights[i] * scale
        weights.append(new_weight)

    def replay(self, n_iterations=None):
        """Weights after the first ``n_iterations`` entries (all by default)."""
        n = len(self) if n_iterations is None else n_iterations
        weights = []
        for t in range(n):
            self.apply(weights, self.dropped[t], self.scale[t], self.new_weight[t])
        return np.array(weights, dtype=np.float64)

    def iter_steps(self):
        """Yield ``(t, dropped, scale, new_weight)`` in order."""
        for t in range(len(self)):
            yield t, self.dropped[t], self.scale[t], self.new_weight[t]

    def truncate(self, n_iterations):
        del self.new_weight[n_iterations:]
        del self.scale[n_iterations:]
        del self.dropped[n_iterations:]

    # --- plain-array state --------------------------------------------------
    def to_arrays(self):
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum([d.size for d in self.dropped], out=offsets[1:])
        flat = np.concatenate(self.dropped) if self.dropped else np.empty(0, dtype=np.int64)
        return {
            "log_new_weight": np.array(self.new_weight, dtype=np.float64),
            "log_scale": np.array(self.scale, dtype=np.float64),
            "log_dropped": flat.astype(np.int64),
            "log_offsets": offsets,
        }

    @classmethod
    def from_arrays(cls, log_new_weight, log_scale, log_dropped, log_offsets):
        log = cls()
        for t in range(len(log_new_weight)):
            log.append(log_dropped[log_offsets[t]:log_offsets[t + 1]], log_scale[t],
                       log_new_weight[t])
        return log

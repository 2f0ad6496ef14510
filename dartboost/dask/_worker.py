"""What a Dask worker keeps and does for one distributed fit.

Each training partition becomes a :class:`PartitionState` in this process's
registry, keyed by ``(fit_id, partition_index)``: its binned rows, targets,
weights, raw scores (a :class:`~dartboost._scores.ScoreKeeper`, so DART's
drops are gathers of cached leaf ids as in a local fit) and, while a tree
grows, a local :class:`~dartboost._grower.TreeGrower` whose row-reading steps
(root sums, node histograms, row partition) the client calls remotely. The
raw partition is read once, at :func:`init_partitions`; nothing but
histograms, sums and counts go back to the client.

Every function here is a task the client pins to the worker that holds the
states (one task per worker per round, covering all its partitions); results
are per partition, so the client sums them in partition order whatever the
placement.
"""
import threading

import numpy as np

from .._binning import BinMapper
from .._common import HISTOGRAM_DTYPE, X_BINNED_DTYPE, X_DTYPE
from .._dart import DartScheme
from .._grower import GrowerBuffers, TreeGrower, _Node, histogram_offsets
from .._scores import CacheBudget, LEAF_CACHE_BYTES, ScoreKeeper
from .._sparse_columns import SparseBinned

_STATES = {}
_LOCK = threading.Lock()


class _BroadcastDrops:
    """A DART policy that replays the client's decision (drops and weights
    are drawn once, on the client, and sent to every worker)."""

    def __init__(self, dropped, new_weight, scale):
        self.dropped = np.asarray(dropped, dtype=np.int64)
        self.new_weight = new_weight
        self.scale = scale

    def select_dropped(self, weights, rng):
        return self.dropped

    def normalize(self, n_dropped):
        return self.new_weight, self.scale


class PartitionState:
    """One training partition on its worker."""

    def __init__(self, X_binned, y, sample_weight, baseline, missing_bin, grower_params,
                 n_threads):
        self.X_binned = X_binned
        self.y = y
        self.sample_weight = sample_weight
        n = X_binned.shape[0]
        self.keeper = ScoreKeeper(X_binned, np.tile(baseline[:, None], n), missing_bin,
                                  CacheBudget(LEAF_CACHE_BYTES), n_threads)
        self.buffers = GrowerBuffers(n)
        K = baseline.shape[0]
        self.gradients = np.empty((K, n), dtype=np.float32)
        self.hessians = np.empty((K, n), dtype=np.float32)
        self.grower_params = grower_params
        self.n_threads = n_threads
        self.grower = None
        self.nodes = {}
        self.scheme = None
        self.scorer = None  # PartialScores of early stopping / a "training" eval set

    def partials(self):
        return None if self.scorer is None else self.scorer(self.y, self.sample_weight,
                                                            self.keeper.raw)


class EvalState:
    """One partition of an eval set on its worker: its binned rows, targets,
    weights and the model's scores on them, kept up to date each iteration."""

    def __init__(self, X_binned, y, sample_weight, baseline, missing_bin, n_threads, scorer):
        self.y = y
        self.sample_weight = sample_weight
        self.keeper = ScoreKeeper(X_binned, np.tile(baseline[:, None], X_binned.shape[0]),
                                  missing_bin, CacheBudget(LEAF_CACHE_BYTES), n_threads)
        self.scorer = scorer

    def partials(self):
        return self.scorer(self.y, self.sample_weight, self.keeper.raw)


class FitActor:
    """The worker's end of the client's rounds (a Dask actor, one per worker
    and fit): runs one of this module's functions on the states it names."""

    def call(self, fn, fit_id, indices, *args):
        return fn(fit_id, indices, *args)


def _get(fit_id, index):
    try:
        return _STATES[(fit_id, index)]
    except KeyError:
        raise RuntimeError(f"dartboost.dask: no state of fit {fit_id} partition {index} on "
                           "this worker (was it restarted?)") from None


#: Rows converted to float64 and binned at a time: a partition is never
#: copied whole (a float32 partition of 1.5M rows x 20 features would
#: otherwise take a 240 MB transient float64 copy).
BIN_BLOCK_ROWS = 65_536


def _where(index):
    """A partition's name in messages: its index, or a label (eval sets)."""
    return index if isinstance(index, str) else f"partition {index}"


def check_partition(X, y, sample_weight, index, check_y):
    """Validate one partition's shapes and targets; return X as an array
    (its own dtype: values are checked block by block in :func:`bin_partition`)."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{_where(index)} of X is {X.ndim}-D; expected 2-D.")
    if X.shape[0] == 0:
        raise ValueError(f"{_where(index)} of X is empty; repartition so that every "
                         "partition has rows.")
    if np.shape(y)[0] != X.shape[0]:
        raise ValueError(f"{_where(index)}: X has {X.shape[0]} rows, y has "
                         f"{np.shape(y)[0]}; X and y must be partitioned alike.")
    if sample_weight is not None and np.shape(sample_weight)[0] != X.shape[0]:
        raise ValueError(f"{_where(index)}: X has {X.shape[0]} rows, sample_weight has "
                         f"{np.shape(sample_weight)[0]}; they must be partitioned alike.")
    check_y(y)
    return X


def bin_partition(mapper, X, index):
    """``mapper.transform(X)``, :data:`BIN_BLOCK_ROWS` rows at a time (the
    same bins: binning is row-wise); infinity is an error."""
    binned = np.empty(X.shape, dtype=X_BINNED_DTYPE, order="F")
    for start in range(0, X.shape[0], BIN_BLOCK_ROWS):
        try:
            block = np.asarray(X[start:start + BIN_BLOCK_ROWS], dtype=X_DTYPE)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{_where(index)} of X is not numeric: {exc}") from None
        if np.isinf(block).any():
            raise ValueError(f"{_where(index)} of X contains infinity (NaN marks "
                             "missing).")
        binned[start:start + block.shape[0]] = mapper.transform(block)
    return binned


def sample_rows(X, rows):
    """The rows ``rows`` of a partition (the binning sample)."""
    return np.asarray(np.asarray(X)[rows], dtype=X_DTYPE)


def ranking_target(make_target, kind, y, query, sample_weight):
    """A ranker's per-partition target (its queries lie within it)."""
    structure = (query, None) if kind == "group" else (None, query)
    return make_target(y, structure, sample_weight)


def ranking_stats(y_enc, sw):
    """Whether the partition has a pair to order (a baseline needs nothing
    else: NDCG ignores a constant shift)."""
    lo = np.minimum.reduceat(y_enc.labels, y_enc.offsets[:-1])
    hi = np.maximum.reduceat(y_enc.labels, y_enc.offsets[:-1])
    return bool(np.any(hi > lo))


class EvalTarget:
    """An eval set's targets, encoded (and checked) as the local estimator
    ``est`` encodes eval set ``index``."""

    def __init__(self, est, index):
        self.est = est
        self.index = index

    def __call__(self, y):
        return self.est._encode_eval_y(self.index, y, None)


def take_rows(part, rows):
    """The rows ``rows`` of a partition's array (X, y, weights or query ids)."""
    return np.asarray(part)[rows]


def query_sizes(kind, query):
    """A partition's query sizes from its group sizes or (contiguous) qids."""
    query = np.asarray(query)
    if kind == "group":
        return query.astype(np.int64)
    return np.diff(np.flatnonzero(np.r_[True, query[1:] != query[:-1], True]))


def class_indices(y, classes, dtype):
    """Each row's position in ``classes``."""
    return np.searchsorted(classes, np.asarray(y)).astype(dtype)


def class_counts(y):
    """A partition's distinct labels and their counts."""
    return np.unique(np.asarray(y), return_counts=True)


class ClassWeights:
    """Training weights of ``class_weight``: the weight of each row's class
    (``weights[class index]``), times its sample weight."""

    def __init__(self, weights):
        self.weights = np.asarray(weights, dtype=np.float64)

    def __call__(self, y_enc, sw):
        # (a binary classifier's targets are (1, n), a multiclass one's (n,))
        w = self.weights[np.asarray(y_enc).reshape(-1).astype(np.intp)]
        return w if sw is None else w * sw


def init_partition(fit_id, index, X, y, sample_weight, query, mapper_arrays, max_bins,
                   encode_y, check_y, baseline_stats, n_threads, row_weights=None, label=None):
    """Validate, bin and register one partition (it runs where Dask put the
    partition); return ``(worker_address, n_rows, baseline statistics)``.
    ``query`` (a ranker's group sizes or qids of the partition) goes to
    ``encode_y`` with the targets; ``row_weights(y_enc, sw)`` gives the
    training weights (``class_weight``); ``label`` names the partition in
    errors (an eval set's)."""
    from ._distributed import worker_address
    where = index if label is None else label
    X = check_partition(X, y, sample_weight, where, check_y)
    if query is None:
        y_enc = encode_y(y)
    else:
        try:
            y_enc = encode_y(y, query, sample_weight)
        except ValueError as exc:
            raise ValueError(f"{_where(where)}: {exc}") from None
    sw = None
    if sample_weight is not None:
        sw = np.ascontiguousarray(sample_weight, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(sw)) or np.any(sw < 0):
            raise ValueError(f"{_where(where)}: sample_weight must be finite and "
                             "non-negative.")
    if row_weights is not None:
        sw = row_weights(y_enc, sw)
    thresholds, offsets, is_categorical = mapper_arrays
    mapper = BinMapper.from_arrays(max_bins, thresholds, offsets, n_threads=n_threads,
                                   is_categorical=is_categorical)
    # its mostly-default features as their entries, as a local fit keeps
    # them (chosen by the same rule, on this partition's bins)
    binned = SparseBinned.compact(bin_partition(mapper, X, where),
                                  histogram_offsets(mapper.n_bins_non_missing_),
                                  mapper.missing_values_bin_idx_)
    with _LOCK:  # completed by set_baseline once the client knows the baseline
        _STATES[(fit_id, index)] = (binned, y_enc, sw, mapper.missing_values_bin_idx_)
    return worker_address(), X.shape[0], baseline_stats(y_enc, sw)


def set_baseline(fit_id, indices, baseline, grower_params, n_threads, scorer=None):
    for index in indices:
        binned, y_enc, sw, missing = _get(fit_id, index)
        _STATES[(fit_id, index)] = st = PartitionState(binned, y_enc, sw, baseline, missing,
                                                       grower_params, n_threads)
        st.scorer = scorer


def set_eval_baseline(fit_id, indices, baseline, n_threads, scorer):
    """Turn registered eval partitions into :class:`EvalState`s."""
    for index in indices:
        binned, y_enc, sw, missing = _get(fit_id, index)
        _STATES[(fit_id, index)] = EvalState(binned, y_enc, sw, baseline, missing, n_threads,
                                             scorer)


def partials(fit_id, indices):
    """Each partition's weighted means (its scorer's), or None."""
    return [_get(fit_id, index).partials() for index in indices]


def update_eval(fit_id, indices, weights, dropped, new_weight, scale, trees, tables,
                first_tree, cache):
    """One iteration on the eval partitions (DART's rescaling of the dropped
    trees, then the new trees, as a local fit updates its eval scores);
    returns their weighted means."""
    for index in indices:
        st = _get(fit_id, index)
        if len(dropped):
            scheme = DartScheme(_BroadcastDrops(dropped, new_weight, scale),
                                st.keeper.raw.shape[0])
            scheme.begin_iteration(weights, None, [st.keeper])
            scheme.end_iteration([st.keeper])
        for k, nodes in enumerate(trees):
            st.keeper.register_tree(nodes, cache=cache, tables=tables[k])
            st.keeper.add_contribution(first_tree + k, new_weight, st.keeper.raw[k])
    return partials(fit_id, indices)


def add_trees(fit_id, indices, trees, weights, K, cache, tables):
    """Register existing trees (a resumed fit) and add them to the scores;
    ``tables``: the booster's categorical tables (its trees index them)."""
    for index in indices:
        st = _get(fit_id, index)
        for j, nodes in enumerate(trees):
            st.keeper.register_tree(nodes, cache=cache, tables=tables)
            st.keeper.add_contribution(j, weights[j // K], st.keeper.raw[j % K])


def begin_iteration(fit_id, indices, loss, weights, dropped, new_weight, scale):
    """DART's removal of the dropped trees, then gradients of every partition."""
    for index in indices:
        st = _get(fit_id, index)
        if len(dropped):
            st.scheme = DartScheme(_BroadcastDrops(dropped, new_weight, scale),
                                   st.keeper.raw.shape[0])
            st.scheme.begin_iteration(weights, None, [st.keeper])
        else:
            st.scheme = None
        loss.prepare(st.y, st.keeper.raw, st.sample_weight)
        loss.gradients(st.y, st.keeper.raw, st.sample_weight, st.n_threads, st.gradients,
                       st.hessians)


def begin_tree(fit_id, indices, sample_rows_by_part, k, feature_mask, hessians_constant):
    """Start tree ``k`` of the iteration; per partition ``(n, sum_g, sum_h)``."""
    out = []
    for index in indices:
        st = _get(fit_id, index)
        rows = None if sample_rows_by_part is None else sample_rows_by_part[index]
        st.grower = TreeGrower(
            st.X_binned, st.gradients[k], st.hessians[k],
            st.grower_params["n_bins_non_missing"], st.grower_params["missing_bin"],
            sample_indices=rows, feature_mask=feature_mask, n_threads=st.n_threads,
            buffers=st.buffers, hessians_are_constant=hessians_constant)
        n, sum_g, sum_h = st.grower._root_sums()
        st.nodes = {0: _Node(0, 0, n, 0, 0.0, 0.0, 0.0)}
        out.append((n, sum_g, sum_h))
    return out


def histograms(fit_id, indices, splits, node_keys):
    """Apply the client's pending ``splits`` (in order; each names its
    parent's key and its children's keys, and ends with a categorical split's
    left set or ``None``), then return each partition's
    histograms of the nodes ``node_keys`` and its left counts."""
    hists, counts = [], []
    for index in indices:
        st = _get(fit_id, index)
        grower, nodes = st.grower, st.nodes
        part_counts = []
        for parent, feature, bin_idx, missing_left, left_key, right_key, bitset in splits:
            node = nodes.pop(parent)
            # the partition's left count; the client checks their sum
            n_left = grower._partition_rows(node, feature, bin_idx, missing_left,
                                            bitset=bitset)
            nodes[left_key] = _Node(left_key, node.start, node.start + n_left, 0, 0, 0, 0)
            nodes[right_key] = _Node(right_key, node.start + n_left, node.stop, 0, 0, 0, 0)
            part_counts.append(n_left)
        counts.append(part_counts)
        part_hists = np.empty((len(node_keys), grower.n_records), dtype=HISTOGRAM_DTYPE)
        unset = ~grower.feature_records(grower.feature_mask)  # the kernel leaves them unset
        for j, key in enumerate(node_keys):
            node = nodes[key]
            if node.n_samples == 0:
                # none of this partition's rows reached the node (the kernel
                # writes nothing for zero rows)
                part_hists[j] = np.zeros((), dtype=HISTOGRAM_DTYPE)
                continue
            hist = grower._build_hist(node)
            part_hists[j] = hist
            part_hists[j][unset] = 0
            grower.buffers.give_histogram(hist)
        hists.append(part_hists)
    return np.stack(hists), counts


def end_iteration(fit_id, indices, trees, tables, first_tree, new_weight, cache):
    """Add the iteration's trees to the scores; put DART's dropped trees back.
    ``tables[k]``: tree ``k``'s categorical tables (its own bitsets). Returns
    each partition's weighted means (early stopping), or Nones."""
    for index in indices:
        st = _get(fit_id, index)
        st.grower, st.nodes = None, {}
        if st.scheme is not None:
            st.scheme.end_iteration([st.keeper])
            st.scheme = None
        for k, nodes in enumerate(trees):
            st.keeper.register_tree(nodes, cache=cache, tables=tables[k])
            st.keeper.add_contribution(first_tree + k, new_weight, st.keeper.raw[k])
    return partials(fit_id, indices)


def drop_fit(fit_id):
    """Forget every state of ``fit_id`` in this process."""
    with _LOCK:
        for key in [key for key in _STATES if key[0] == fit_id]:
            del _STATES[key]
    return True


def n_states(fit_id=None):
    return sum(1 for key in _STATES if fit_id is None or key[0] == fit_id)

"""The fitted model, free of scikit-learn: :class:`Booster`.

A booster is what a fit produces and what a model file holds: the binning of
the features, a baseline per output, the trees flattened back to back (the
layout of the compiled predictor), one weight per iteration and the log of
every rescaling DART made, so the model at any past iteration can be rebuilt
exactly. The scikit-learn estimators are thin adapters over it (as LightGBM's
``LGBMModel`` over its ``Booster``); the boosting loop appends to it.

Raw scores have shape ``(n_samples, n_trees_per_iteration)``; tree ``j``
belongs to iteration ``j // K`` and output ``j % K``.

A split on a categorical feature stores, in its node's ``num_threshold``, the
index of its left set in :attr:`Booster.cat_bitsets` (8 uint32 words a split,
one bit per bin; the splits of all trees back to back, in tree order).
"""
import numpy as np
import scipy.sparse as sp

from ._binning import BinMapper, dense_blocks
from ._cext import _packed_predictor, _splitting
from ._common import NODE_DTYPE, X_DTYPE, threads_for
from ._dart import WeightLog
from ._model_format import FormatError, validate_state

#: The booster's part of a model-state header (the rest is the estimator's).
BOOSTER_HEADER_FIELDS = ("n_features_in", "n_trees_per_iteration", "n_iter", "max_bins")


class _GrowableArray:
    """A 1-D array with amortised O(1) appends (capacity doubling)."""

    def __init__(self, dtype, data=None):
        data = np.zeros(0, dtype=dtype) if data is None else np.asarray(data, dtype=dtype)
        self._buf = np.array(data, dtype=dtype)  # owned copy
        self._size = data.shape[0]

    @property
    def view(self):
        return self._buf[:self._size]

    def extend(self, values):
        values = np.asarray(values, dtype=self._buf.dtype)
        need = self._size + values.shape[0]
        if need > self._buf.shape[0]:
            grown = np.empty(max(need, 2 * self._buf.shape[0], 16), dtype=self._buf.dtype)
            grown[:self._size] = self._buf[:self._size]
            self._buf = grown
        self._buf[self._size:need] = values
        self._size = need

    def truncate(self, size):
        self._size = size

    def compact(self):
        """Drop the spare capacity (a fitted model holds exactly its trees)."""
        if self._buf.shape[0] != self._size:
            self._buf = self._buf[:self._size].copy()

    def __getstate__(self):
        self.compact()
        return self.__dict__


class Booster:
    """Trees, weights and binning of a fitted boosted model.

    Parameters
    ----------
    bin_mapper : BinMapper
        Fitted binning of the ``n_features`` features (used to continue
        training; prediction works on raw values).
    baseline : ndarray of shape (n_trees_per_iteration,)
        Raw score before any tree.
    """

    def __init__(self, bin_mapper, baseline):
        self.bin_mapper = bin_mapper
        self.baseline = np.array(baseline, dtype=np.float64).reshape(-1)
        self._nodes = _GrowableArray(NODE_DTYPE)
        self._offsets = _GrowableArray(np.int64, [0])
        self._cat_words = _GrowableArray(np.uint32)
        self._weights = []
        self.weight_log = WeightLog()
        self._packed_cache = None
        self._lookup_cache = None

    def __getstate__(self):
        # the prediction layout is derived data: rebuilt on first use
        state = self.__dict__.copy()
        state["_packed_cache"] = state["_lookup_cache"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__.setdefault("_packed_cache", None)
        self.__dict__.setdefault("_lookup_cache", None)

    # ---------------------------------------------------------------- shape
    @property
    def n_trees_per_iteration(self):
        """Trees per iteration: one per output (class)."""
        return self.baseline.shape[0]

    @property
    def n_features(self):
        return self.bin_mapper._offsets.shape[0] - 1

    def num_iterations(self):
        """Iterations in the model."""
        return len(self._weights)

    @property
    def n_trees(self):
        return self._offsets.view.shape[0] - 1

    @property
    def nodes(self):
        """All trees' nodes back to back (read-only view)."""
        v = self._nodes.view
        v.flags.writeable = False
        return v

    @property
    def tree_offsets(self):
        """Tree ``j`` is ``nodes[tree_offsets[j]:tree_offsets[j + 1]]``."""
        v = self._offsets.view
        v.flags.writeable = False
        return v

    def tree(self, j):
        """Nodes of tree ``j`` (a view, no copy)."""
        o = self.tree_offsets
        return self.nodes[o[j]:o[j + 1]]

    @property
    def trees(self):
        """All trees as a list of views."""
        return [self.tree(j) for j in range(self.n_trees)]

    @property
    def weights(self):
        """Current weight of each iteration (DART rescales them)."""
        return np.asarray(self._weights, dtype=np.float64)

    def weights_at(self, n_iterations):
        """Weights the first ``n_iterations`` had right after iteration
        ``n_iterations`` (replaying the weight log)."""
        return self.weight_log.replay(n_iterations)

    @property
    def cat_bitsets(self):
        """Left sets of all categorical splits, shape ``(n_splits, 8)``."""
        v = self._cat_words.view.reshape(-1, _splitting.CATEGORY_BITSET_WORDS)
        v.flags.writeable = False
        return v

    def categorical_split_mask(self, nodes=None):
        """Which of ``nodes`` (default: all) are categorical splits."""
        nodes = self.nodes if nodes is None else nodes
        is_cat = getattr(self.bin_mapper, "is_categorical_", None)
        if is_cat is None or not is_cat.any():
            return np.zeros(nodes.shape[0], dtype=bool)
        inner = nodes["is_leaf"] == 0
        return inner & (is_cat[np.where(inner, nodes["feature_idx"], 0)] != 0)

    def _cat_tables(self):
        """Keyword arguments of the predictor's categorical tables (none
        without categorical features: the numerical fast path)."""
        mapper = self.bin_mapper
        if not getattr(mapper, "has_categorical", False):
            return {}
        return {"is_categorical": mapper.is_categorical_, "cat_values": mapper._flat,
                "cat_offsets": mapper._offsets,
                "cat_bitsets": np.ascontiguousarray(self._cat_words.view)}

    def _raw_tables(self):
        """Keyword arguments of the packed predictor's categorical tables."""
        mapper = self.bin_mapper
        if not getattr(mapper, "has_categorical", False):
            return {}
        if self._lookup_cache is None:
            # direct bins of integer categories (the binning never changes
            # after the first fit; a warm start keeps it)
            lookup, start, size = _packed_predictor.category_lookup(
                mapper._flat, mapper._offsets, mapper.is_categorical_.astype(np.uint8))
            self._lookup_cache = {"cat_lookup": lookup, "cat_lookup_start": start,
                                  "cat_lookup_size": size}
        return {"cat_values": mapper._flat, "cat_offsets": mapper._offsets,
                "cat_bitsets": np.ascontiguousarray(self._cat_words.view), **self._lookup_cache}

    def _packed(self):
        """The trees in the predictor's compact layout ``(packed, values,
        node_ids, roots, depths)`` (see ``_cext/_packed_predictor.pyx``):
        built on first use, kept until the trees change; never saved."""
        if self._packed_cache is None:
            mapper = self.bin_mapper
            is_cat = (mapper.is_categorical_.astype(np.uint8)
                      if getattr(mapper, "has_categorical", False) else None)
            self._packed_cache = _packed_predictor.pack_trees(
                self.nodes, np.ascontiguousarray(self.tree_offsets), self.n_features, is_cat,
                self.cat_bitsets.shape[0])
        return self._packed_cache

    def binned_tables(self):
        """The categorical tables of binned traversal (``_scores``)."""
        tables = self._cat_tables()
        return {k: tables[k] for k in ("is_categorical", "cat_bitsets") if k in tables}

    # ------------------------------------------------------------- building
    def append_iteration(self, trees, dropped, scale, new_weight, cat_bitsets=None):
        """Add one iteration's ``K`` trees after rescaling the ``dropped``
        iterations by ``scale``; the new trees get ``new_weight``.

        ``cat_bitsets[k]`` (the grower's :attr:`~TreeGrower.cat_bitsets`)
        holds tree ``k``'s categorical left sets, which its nodes index from
        0; they are renumbered into :attr:`cat_bitsets`."""
        if len(trees) != self.n_trees_per_iteration:
            raise ValueError(f"an iteration has {self.n_trees_per_iteration} trees, "
                             f"got {len(trees)}")
        WeightLog.apply(self._weights, dropped, scale, new_weight)
        self.weight_log.append(dropped, scale, new_weight)
        self._packed_cache = None
        end = self._offsets.view[-1]
        for k, nodes in enumerate(trees):
            is_cat = self.categorical_split_mask(nodes)
            if is_cat.any():
                sets = np.asarray(cat_bitsets[k], dtype=np.uint32)
                if sets.shape != (int(is_cat.sum()), _splitting.CATEGORY_BITSET_WORDS):
                    raise ValueError("a tree's cat_bitsets do not match its categorical splits")
                nodes = nodes.copy()
                nodes["num_threshold"][is_cat] += self.cat_bitsets.shape[0]
                self._cat_words.extend(sets.reshape(-1))
            self._nodes.extend(nodes)
            end += nodes.shape[0]
            self._offsets.extend([end])

    def truncate(self, n_iterations):
        """Keep the first ``n_iterations``, with the weights they had then."""
        K = self.n_trees_per_iteration
        self._packed_cache = None
        self._offsets.truncate(n_iterations * K + 1)
        self._nodes.truncate(int(self._offsets.view[-1]))
        n_sets = int(self.categorical_split_mask().sum())
        self._cat_words.truncate(n_sets * _splitting.CATEGORY_BITSET_WORDS)
        self.weight_log.truncate(n_iterations)
        self._weights = list(self.weight_log.replay())

    def compact(self):
        self._nodes.compact()
        self._offsets.compact()
        self._cat_words.compact()

    def slice(self, start, stop, include_baseline=True):
        """A booster of iterations ``[start, stop)`` with their current weights.

        Only those trees are copied. Its weight log records no drops, so it
        replays to exactly the sliced weights.
        """
        K = self.n_trees_per_iteration
        if not 0 <= start < stop <= self.num_iterations():
            raise ValueError(f"iteration range [{start}, {stop}) is not inside the model's "
                             f"{self.num_iterations()} iterations")
        baseline = self.baseline if include_baseline else np.zeros_like(self.baseline)
        part = Booster(self.bin_mapper, baseline)
        o = self.tree_offsets
        first, last = o[start * K], o[stop * K]
        nodes = self.nodes[first:last].copy()
        is_cat = self.categorical_split_mask()
        words = _splitting.CATEGORY_BITSET_WORDS
        c0, c1 = int(is_cat[:first].sum()), int(is_cat[:last].sum())
        nodes["num_threshold"][is_cat[first:last]] -= c0
        part._nodes = _GrowableArray(NODE_DTYPE, nodes)
        part._cat_words = _GrowableArray(np.uint32, self._cat_words.view[c0 * words:c1 * words])
        part._offsets = _GrowableArray(np.int64, o[start * K:stop * K + 1] - first)
        for w in self._weights[start:stop]:
            WeightLog.apply(part._weights, (), 1.0, w)
            part.weight_log.append((), 1.0, w)
        return part

    # ----------------------------------------------------------- prediction
    def _check_X(self, X):
        if sp.issparse(X):
            if X.ndim != 2 or X.shape[1] != self.n_features:
                raise ValueError(f"X has shape {X.shape}; this model needs "
                                 f"(n_samples, {self.n_features}).")
            return sp.csr_matrix(X, dtype=X_DTYPE)
        # float32 or column-ordered input is converted block by block later
        X = np.asarray(X)
        if X.dtype not in (np.float32, np.float64):
            X = np.asarray(X, dtype=X_DTYPE)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X has shape {X.shape}; this model needs "
                             f"(n_samples, {self.n_features}).")
        return X

    def _iteration_range(self, iteration_range):
        n = self.num_iterations()
        if iteration_range is None:
            return 0, n
        if isinstance(iteration_range, np.ndarray) and iteration_range.ndim == 1:
            iteration_range = tuple(iteration_range.tolist())
        if not (isinstance(iteration_range, (tuple, list)) and len(iteration_range) == 2
                and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                        for v in iteration_range)):
            raise TypeError(f"iteration_range must be a pair (start, stop) of integers or "
                            f"None, got {iteration_range!r}.")
        start, stop = (int(v) for v in iteration_range)
        if not 0 <= start <= stop <= n:
            raise ValueError(f"iteration_range={tuple(iteration_range)} must satisfy "
                             f"0 <= start <= stop <= {n} (the model's iterations).")
        return start, stop

    def predict_raw(self, X, iteration_range=None, n_threads=1, reject_infinity=False):
        """Raw scores, shape ``(n_samples, n_trees_per_iteration)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        iteration_range : (start, stop) or None
            Use only iterations ``[start, stop)``, with the weights they had
            right after iteration ``stop`` (DART rescales earlier trees later;
            the weight log is replayed). The baseline is always included.
        n_threads : int
        reject_infinity : bool, default=False
            Raise ``ValueError`` if ``X`` holds +-inf (the estimators' input
            contract, checked in the prediction's own pass over the rows);
            by default infinity is a value like any other.
        """
        X = self._check_X(X)
        start, stop = self._iteration_range(iteration_range)
        K = self.n_trees_per_iteration
        weights = self.weights if stop == self.num_iterations() else self.weights_at(stop)
        trees = np.arange(start * K, stop * K, dtype=np.int64)
        out = np.tile(self.baseline, (X.shape[0], 1))
        has_inf = self._predict_into(X, trees, np.repeat(weights[start:stop], K), out,
                                     n_threads)
        if reject_infinity and has_inf:
            dtype = X.dtype
            raise ValueError(f"Input X contains infinity or a value too large for {dtype!r}.")
        return out

    def _predict_into(self, X, trees, factors, out, n_threads):
        """``out[i, t % K] += factors[u] * tree_t(X[i])`` for ``t = trees[u]``,
        in order (``X`` checked; a sparse one block by block). Returns whether
        ``X`` holds +-inf."""
        packed, values, _, roots, depths = self._packed()
        tables = self._raw_tables()
        factors = np.ascontiguousarray(factors, dtype=np.float64)
        has_inf = False
        for start, stop, block in dense_blocks(X):
            has_inf |= _packed_predictor.predict_raw(
                packed, values, roots, depths, trees, factors, self.n_trees_per_iteration,
                block, threads_for(block.shape[0] * max(trees.shape[0], 1) * 8, n_threads),
                out[start:stop], **tables)
        return has_inf

    def staged_predict_raw(self, X, n_threads=1):
        """Yield the raw scores after each iteration, ``(n_samples, K)``.

        One running score is updated per iteration (the dropped trees by
        their weight change, then the new trees), so memory is
        O(n_samples * K) whatever the number of trees.
        """
        X = self._check_X(X)
        K = self.n_trees_per_iteration
        raw = np.tile(self.baseline, (X.shape[0], 1))
        weights = []
        for t, dropped, scale, new_weight in self.weight_log.iter_steps():
            trees = [i * K + k for i in dropped for k in range(K)]
            factors = [weights[i] * scale - weights[i] for i in dropped for _ in range(K)]
            trees += [t * K + k for k in range(K)]
            factors += [new_weight] * K
            WeightLog.apply(weights, dropped, scale, new_weight)
            # a sparse X is expanded block by block at every stage: memory
            # stays one block, at the cost of re-expanding it
            self._predict_into(X, np.asarray(trees, dtype=np.int64), factors, raw, n_threads)
            yield raw.copy()

    def predict_leaf(self, X, n_threads=1, iteration_range=None, numbering="node"):
        """Leaf reached in every tree, shape ``(n_samples, n_trees)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        n_threads : int
        iteration_range : (start, stop) or None
            Only the trees of iterations ``[start, stop)`` (columns
            ``start * K`` to ``stop * K``).
        numbering : {"node", "leaf"}, default="node"
            ``"node"``: the leaf's node index within its tree (scikit-learn's
            ``apply``; ``node_index`` of ``trees_to_dataframe``); ``"leaf"``:
            its number among the tree's leaves, ``0 .. n_leaves - 1`` in node
            order (LightGBM's ``pred_leaf``).
        """
        if numbering not in ("node", "leaf"):
            raise ValueError(f"numbering must be 'node' or 'leaf', got {numbering!r}.")
        X = self._check_X(X)
        start, stop = self._iteration_range(iteration_range)
        K = self.n_trees_per_iteration
        offsets = np.ascontiguousarray(self.tree_offsets[start * K:stop * K + 1])
        out = np.empty((X.shape[0], offsets.shape[0] - 1), dtype=np.uint32)
        packed, _, node_ids, roots, depths = self._packed()
        trees = np.arange(start * K, stop * K, dtype=np.int64)
        tables = self._raw_tables()
        for start, stop, block in dense_blocks(X):
            _packed_predictor.predict_leaves(
                packed, node_ids, roots, depths, trees, block,
                threads_for(block.shape[0] * max(out.shape[1], 1) * 8, n_threads),
                out[start:stop], **tables)
        if numbering == "node":
            return out
        # rank of every node among its tree's leaves: leaves before it
        leaves_before = np.concatenate([[0], np.cumsum(self.nodes["is_leaf"] != 0)])
        roots = offsets[:-1]
        flat = out.astype(np.int64) + roots
        return (leaves_before[flat] - leaves_before[roots]).astype(np.int32)

    def feature_importances(self, importance_type="gain", normalize=True):
        """Importance of each feature.

        Parameters
        ----------
        importance_type : {"gain", "split"}, default="gain"
            ``"gain"``: split gains, each multiplied by its tree's current
            (DART) weight, so dropped-and-shrunk trees count for what they
            contribute; ``"split"``: number of splits on the feature.
        normalize : bool, default=True
            Scale to sum to 1 (scikit-learn's convention); ``False`` gives
            the raw sums (LightGBM's ``Booster.feature_importance``).
        """
        if importance_type not in ("gain", "split"):
            raise ValueError(f"importance_type must be 'gain' or 'split', got "
                             f"{importance_type!r}.")
        K = self.n_trees_per_iteration
        nodes = self.nodes
        tree_of = np.repeat(np.arange(self.n_trees), np.diff(self.tree_offsets))
        split = nodes["is_leaf"] == 0
        if importance_type == "split":
            per_split = np.ones(int(split.sum()))
        else:
            w = self.weights[tree_of[split] // K] if self.n_trees else np.zeros(0)
            per_split = w * nodes["gain"][split]
        imp = np.zeros(self.n_features)
        np.add.at(imp, nodes["feature_idx"][split], per_split)
        total = imp.sum()
        return imp / total if normalize and total > 0 else imp

    # ----------------------------------------------------------- inspection
    def _view(self):
        """The trees as :mod:`dartboost.inspection` reads them. A booster
        knows raw scores only: no estimator class, parameters or classes."""
        from ._tree_view import _view_from_state
        header, arrays = self.to_state()
        return _view_from_state({**header, "class": "Booster", "params": {}}, arrays)

    def dump_model(self):
        """The trees as a JSON-serialisable dict: the schema of
        :func:`dartboost.inspection.dump_model` (``estimator`` is
        ``"Booster"``, ``link`` ``"identity"``: the raw score; call it on the
        estimator for its class, parameters and classes)."""
        from .inspection import dump_model
        return dump_model(self._view())

    def trees_to_dataframe(self):
        """One row per node of every tree (pandas): the columns of
        :func:`dartboost.inspection.trees_to_dataframe`."""
        from .inspection import trees_to_dataframe
        return trees_to_dataframe(self._view())

    # ---------------------------------------------------------------- state
    def to_state(self):
        """``(header, arrays)``: the booster's part of a model state."""
        header = {"n_features_in": int(self.n_features),
                  "n_trees_per_iteration": int(self.n_trees_per_iteration),
                  "n_iter": self.num_iterations(),
                  "max_bins": int(self.bin_mapper.max_bins)}
        arrays = {"nodes": self.nodes.copy(), "tree_offsets": self.tree_offsets.copy(),
                  "tree_weights": self.weights, "baseline": self.baseline.copy(),
                  "cat_bitsets": self._cat_words.view.copy(),
                  **self.bin_mapper.to_arrays(), **self.weight_log.to_arrays()}
        return header, arrays

    @classmethod
    def from_state(cls, header, arrays, n_threads=1):
        """Rebuild a booster from a model state (validated first).

        Raises
        ------
        FormatError
            If any field is malformed (see ``docs/contracts.md``), including
            trees whose nodes do not form a tree.
        """
        if not isinstance(header, dict):
            raise FormatError("header: must be an object")
        info = validate_state(header, arrays)
        mapper = BinMapper.from_arrays(info["max_bins"], arrays["bin_thresholds"],
                                       arrays["bin_offsets"], n_threads,
                                       arrays.get("is_categorical"))
        booster = cls(mapper, arrays["baseline"])
        booster._nodes = _GrowableArray(NODE_DTYPE, arrays["nodes"])
        booster._offsets = _GrowableArray(np.int64, arrays["tree_offsets"])
        booster._cat_words = _GrowableArray(np.uint32, arrays.get("cat_bitsets"))
        booster.weight_log = WeightLog.from_arrays(arrays["log_new_weight"],
                                                   arrays["log_scale"], arrays["log_dropped"],
                                                   arrays["log_offsets"])
        booster._weights = [float(w) for w in arrays["tree_weights"]]
        try:
            # the prediction layout, built now: a node reached twice or never
            # (not a tree, though each child index is in range) is a bad file
            booster._packed()
        except ValueError as exc:
            raise FormatError(f"nodes: {exc}") from None
        return booster

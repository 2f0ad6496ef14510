"""One read-only view of a fitted model's trees, for explain/inspect/export/plot.

Everything in :mod:`dartboost.explain`, :mod:`dartboost.inspection`,
:mod:`dartboost.export` and :mod:`dartboost.plotting` reads a model only
through :func:`ensemble_view`. It is the single place that knows how a fitted
estimator lays out its trees (today: the model state of ``_get_state()``, see
docs/contracts.md), so a change of the engine's layout changes this file only.

A tree node sends a row left when ``x <= threshold`` on its raw (unbinned)
feature value, and a missing value (NaN) left when ``missing_left``. A
categorical split (``categories[node]`` is not ``None``; its threshold is NaN)
sends a row left when ``x`` is one of the sorted raw category values
``categories[node]``, any other value (rare, pooled or unseen) right. A tree's
contribution to its output is ``weight * value[leaf]`` (``weight``: the DART
weight of the tree's iteration, ``learning_rate`` for MART); the raw score of
output ``k`` is ``baseline[k] + sum`` of the contributions of the trees with
``output == k``.
"""
from dataclasses import dataclass, field, replace

from ._model_format import CAT_BITSET_WORDS

import numpy as np
from ._losses import LOG_LINK_LOSSES

#: Link functions from the raw score to a prediction (see :attr:`EnsembleView.link`).
LINKS = ("identity", "log", "logistic", "softmax")


@dataclass(frozen=True)
class TreeView:
    """One tree as plain arrays indexed by node (node 0 is the root).

    Attributes
    ----------
    feature : ndarray of int32
        Split feature of each node; ``-1`` for leaves.
    threshold : ndarray of float64
        Raw-value threshold: ``x <= threshold`` goes left (``inf`` for leaves
        and for a split on the last bin).
    missing_left : ndarray of bool
        Where a missing (NaN) value goes.
    left, right : ndarray of int32
        Children (indices in this tree); ``-1`` for leaves.
    value : ndarray of float64
        Unweighted node value (the leaf values for leaves; for inner nodes the
        value the node would have had as a leaf).
    cover : ndarray of float64
        Training rows that reached the node (the row subsample's, with
        ``subsample < 1``); children's covers add up to the parent's.
    hessian : ndarray of float64
        Sum of the training hessians of the node's rows.
    gain : ndarray of float64
        Split gain (0 for leaves).
    weight : float
        The tree's weight (DART rescales it; MART: the learning rate).
    output : int
        Which raw-score column (class or regression output) the tree adds to.
    iteration : int
        Boosting iteration the tree was grown in.
    categories : list or None
        ``None`` when the tree has no categorical split; else, per node,
        ``None`` or (categorical splits) the sorted raw category values that
        go left.
    """

    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    cover: np.ndarray
    hessian: np.ndarray
    gain: np.ndarray
    weight: float
    output: int
    iteration: int
    categories: list = None

    @property
    def has_categorical(self):
        return self.categories is not None

    def goes_left(self, node, x):
        """Whether raw value ``x`` (a float) goes left at inner ``node``."""
        if x != x:
            return bool(self.missing_left[node])
        if self.categories is not None and self.categories[node] is not None:
            return bool(np.isin(x, self.categories[node]))
        return bool(x <= self.threshold[node])

    @property
    def n_nodes(self):
        return self.feature.shape[0]

    @property
    def is_leaf(self):
        return self.left < 0

    def depth(self):
        """Length of the longest root-to-leaf path (0 for a single leaf)."""
        depth = np.zeros(self.n_nodes, dtype=np.int64)
        for node in range(self.n_nodes):  # children always come after parents
            if self.left[node] >= 0:
                depth[self.left[node]] = depth[self.right[node]] = depth[node] + 1
        return int(depth.max())


@dataclass(frozen=True)
class EnsembleView:
    """A whole fitted model as :class:`TreeView` s plus the scalars around them.

    Attributes
    ----------
    trees : list of TreeView
        In training order; iteration ``t`` holds trees
        ``t * n_trees_per_iteration ... + n_trees_per_iteration - 1``.
    baseline : ndarray of shape (n_outputs,)
        Raw score before any tree (kept outside the trees, never dropped).
    n_trees_per_iteration : int
        Also the number of raw-score outputs.
    n_features : int
    feature_names : list of str or None
        ``feature_names_in_`` when the model was fitted on a DataFrame.
    link : {"identity", "log", "logistic", "softmax"}
        Prediction from the raw score (``log``: Poisson's ``exp``).
    estimator_class : str
    classes : list or None
        Class labels of a classifier.
    weight_steps : list of (dropped, scale, new_weight)
        The DART weight log: iteration ``t`` was added with ``new_weight``
        after the iterations ``dropped`` were multiplied by ``scale``.
    train_score, validation_score : list of float
        Scores recorded during fit (empty without scoring).
    params : dict
        The estimator's parameters.
    """

    trees: list
    baseline: np.ndarray
    n_trees_per_iteration: int
    n_features: int
    feature_names: list
    link: str
    estimator_class: str
    classes: list
    weight_steps: list
    train_score: list
    validation_score: list
    params: dict = field(default_factory=dict)

    @property
    def n_outputs(self):
        return self.n_trees_per_iteration

    @property
    def n_iterations(self):
        return len(self.weight_steps)

    def feature_name(self, j):
        return self.feature_names[j] if self.feature_names is not None else f"f{j}"

    def weight_history(self):
        """Iteration weights after each iteration: array ``(n_iter, n_iter)``,
        row ``t`` the weights after iteration ``t`` (NaN for later ones)."""
        T = self.n_iterations
        hist = np.full((T, T), np.nan)
        weights = np.zeros(T)
        for t, (dropped, scale, new_weight) in enumerate(self.weight_steps):
            weights[dropped] *= scale
            weights[t] = new_weight
            hist[t, :t + 1] = weights[:t + 1]
        return hist


def _link(header):
    cls = header["class"]
    if cls == "DartClassifier":
        return "logistic" if header["n_trees_per_iteration"] == 1 else "softmax"
    if header.get("custom_objective"):
        return "identity"  # a callable objective's raw scores are the output
    if cls == "DartRegressor" and header["params"].get("loss") in LOG_LINK_LOSSES:
        return "log"
    return "identity"


def _left_categories(tree, arrays):
    """Per node: the raw categories a categorical split sends left, or None
    (``None`` overall when the tree has no categorical split)."""
    is_cat = arrays.get("is_categorical")
    if is_cat is None or not np.any(is_cat):
        return None
    inner = tree["is_leaf"] == 0
    cat = inner & (np.asarray(is_cat)[np.where(inner, tree["feature_idx"], 0)] != 0)
    if not cat.any():
        return None
    words = np.asarray(arrays["cat_bitsets"], dtype="<u4").reshape(-1, CAT_BITSET_WORDS)
    offsets, values = arrays["bin_offsets"], arrays["bin_thresholds"]
    out = [None] * tree.shape[0]
    for node in np.flatnonzero(cat):
        f = tree["feature_idx"][node]
        bits = np.unpackbits(words[int(tree["num_threshold"][node])].view(np.uint8),
                             bitorder="little")
        kept = values[offsets[f]:offsets[f + 1]]
        out[node] = kept[np.flatnonzero(bits[:kept.size])].astype(np.float64)
    return out


def _view_from_state(header, arrays):
    nodes = arrays["nodes"]
    offsets = np.asarray(arrays["tree_offsets"], dtype=np.int64)
    K = int(header["n_trees_per_iteration"])
    iteration_weights = np.asarray(arrays["tree_weights"], dtype=np.float64)
    trees = []
    for j, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        tree = nodes[a:b]
        inner = tree["is_leaf"] == 0
        categories = _left_categories(tree, arrays)
        threshold = np.where(inner, tree["num_threshold"], np.inf).astype(np.float64)
        if categories is not None:
            threshold[[c is not None for c in categories]] = np.nan
        trees.append(TreeView(
            feature=np.where(inner, tree["feature_idx"], -1).astype(np.int32),
            threshold=threshold,
            missing_left=(tree["missing_go_to_left"] != 0) & inner,
            left=np.where(inner, tree["left"].astype(np.int64), -1).astype(np.int32),
            right=np.where(inner, tree["right"].astype(np.int64), -1).astype(np.int32),
            value=tree["value"].astype(np.float64),
            cover=tree["count"].astype(np.float64),
            hessian=tree["sum_hessians"].astype(np.float64),
            gain=np.where(inner, tree["gain"], 0.0).astype(np.float64),
            weight=float(iteration_weights[j // K]),
            output=j % K,
            iteration=j // K,
            categories=categories,
        ))
    log_off = arrays["log_offsets"]
    steps = [(np.asarray(arrays["log_dropped"][log_off[t]:log_off[t + 1]], dtype=np.int64),
              float(arrays["log_scale"][t]), float(arrays["log_new_weight"][t]))
             for t in range(len(arrays["log_new_weight"]))]
    return EnsembleView(
        trees=trees,
        baseline=np.asarray(arrays["baseline"], dtype=np.float64).reshape(-1).copy(),
        n_trees_per_iteration=K,
        n_features=int(header["n_features_in"]),
        feature_names=header.get("feature_names_in"),
        link=_link(header),
        estimator_class=header["class"],
        classes=header.get("classes"),
        weight_steps=steps,
        train_score=list(header.get("train_score", [])),
        validation_score=list(header.get("validation_score", [])),
        params=dict(header.get("params", {})),
    )


def _restrict(view, iteration_range):
    """The model as it was after iteration ``stop`` (DART weights replayed
    from the log, so exactly the weights it had then), keeping only the trees
    of iterations ``start <= t < stop``; the baseline always stays."""
    try:
        start, stop = (int(v) for v in iteration_range)
    except (TypeError, ValueError):
        raise TypeError("iteration_range must be a pair (start, stop) of integers.") from None
    T = view.n_iterations
    if not 0 <= start < stop <= T:
        raise ValueError(f"iteration_range {iteration_range!r} must satisfy "
                         f"0 <= start < stop <= n_iterations ({T}).")
    weights = view.weight_history()[stop - 1] if T else np.empty(0)
    trees = [replace(t, weight=float(weights[t.iteration])) for t in view.trees
             if start <= t.iteration < stop]
    return replace(view, trees=trees, weight_steps=view.weight_steps[:stop])


def ensemble_view(model, iteration_range=None):
    """The :class:`EnsembleView` of a fitted dartboost model.

    Parameters
    ----------
    model : fitted DartRegressor, DartClassifier or DartRanker, an object with
        a ``booster_`` attribute holding one, or an EnsembleView.
    iteration_range : (start, stop) or None
        Only the trees of iterations ``start <= t < stop``, with the weights
        they had after iteration ``stop`` (``None``: the whole model).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.
    TypeError
        If ``model`` is not a dartboost model.
    """
    if isinstance(model, EnsembleView):
        view = model
    else:
        target = model
        if not hasattr(target, "_get_state") and hasattr(target, "booster_"):
            target = target.booster_
        if not hasattr(target, "_get_state"):
            raise TypeError(f"Expected a fitted dartboost estimator, got "
                            f"{type(model).__name__}.")
        view = _view_from_state(*target._get_state())
    return view if iteration_range is None else _restrict(view, iteration_range)


def flat_arrays(view, tree_indices=None):
    """The trees concatenated for the compiled kernels.

    Returns a dict of contiguous arrays: ``feature`` (int32), ``threshold``
    (float64), ``missing_left`` (uint8), ``left``/``right`` (int32, local to
    the tree, -1 at leaves), ``value`` (float64, **multiplied by the tree
    weight**), ``cover`` (float64), ``tree_offsets`` (int64, n_trees + 1),
    ``tree_output`` (int32) and ``max_depth`` (int). With categorical splits
    also ``cat_start``/``cat_stop`` (int64 per node, -1 at other nodes) into
    ``cat_values`` (float64, each split's sorted left categories); otherwise
    those three are ``None``.
    """
    trees = view.trees if tree_indices is None else [view.trees[i] for i in tree_indices]
    offsets = np.zeros(len(trees) + 1, dtype=np.int64)
    np.cumsum([t.n_nodes for t in trees], out=offsets[1:])

    def cat(get, dtype):
        if not trees:
            return np.zeros(0, dtype=dtype)
        return np.ascontiguousarray(np.concatenate([get(t) for t in trees]), dtype=dtype)

    return {
        "feature": cat(lambda t: t.feature, np.int32),
        "threshold": cat(lambda t: t.threshold, np.float64),
        "missing_left": cat(lambda t: t.missing_left, np.uint8),
        "left": cat(lambda t: t.left, np.int32),
        "right": cat(lambda t: t.right, np.int32),
        "value": cat(lambda t: t.weight * t.value, np.float64),
        "cover": cat(lambda t: t.cover, np.float64),
        "tree_offsets": offsets,
        "tree_output": np.array([t.output for t in trees], dtype=np.int32),
        "max_depth": max((t.depth() for t in trees), default=0),
        **_flat_categories(trees),
    }


def _flat_categories(trees):
    if not any(t.has_categorical for t in trees):
        return {"cat_start": None, "cat_stop": None, "cat_values": None}
    starts, stops, values, pos = [], [], [], 0
    for t in trees:
        for node in range(t.n_nodes):
            cats = t.categories[node] if t.categories is not None else None
            if cats is None:
                starts.append(-1)
                stops.append(-1)
            else:
                starts.append(pos)
                pos += cats.size
                stops.append(pos)
                values.append(cats)
    return {"cat_start": np.array(starts, dtype=np.int64),
            "cat_stop": np.array(stops, dtype=np.int64),
            "cat_values": np.ascontiguousarray(np.concatenate(values) if values
                                               else np.zeros(0), dtype=np.float64)}


def require_numerical(view, what):
    """Raise a clear error when ``what`` cannot express categorical splits."""
    if any(t.has_categorical for t in view.trees):
        raise ValueError(f"{what} cannot express the model's categorical (set) splits; "
                         "fit with categorical_features=None (or one-hot encode) to use it.")

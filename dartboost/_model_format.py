"""The one model format of dartboost: a JSON-able header and plain numpy arrays.

A fitted model is a :class:`~dartboost._booster.Booster` (trees, weights, weight
log, binning, baseline) plus a few estimator extras (class labels, output
layout) that each estimator declares through two explicit hooks,
``_extra_state()`` and ``_load_extra_state(header)``. Save/load, the CLI, the
store, checkpoints, coded prediction and serving all go through
:func:`estimator_state` and :func:`estimator_from_state`.

Everything read back is untrusted. :func:`validate_state` cross-checks every
array the compiled predictor, the binner or a warm-started fit indexes before
any of it is used, so a malformed or crafted file raises :class:`FormatError`
naming the field instead of crashing the process, allocating without bound
or silently predicting something else. Loadable classes come from an explicit
registry (:func:`register_model_class`); a file never makes the loader import
a module. The rules are listed in ``docs/contracts.md``.
"""
import numbers

import numpy as np

from ._common import MAX_BINS, NODE_DTYPE

FORMAT_NAME = "dartboost-model"
FORMAT_VERSION = 1

#: Arrays of a model state, with the dtype and number of dimensions each must have.
ARRAY_SPECS = {
    "nodes": (NODE_DTYPE, 1),
    "tree_offsets": (np.dtype(np.int64), 1),
    "tree_weights": (np.dtype(np.float64), 1),
    "baseline": (np.dtype(np.float64), 1),
    "bin_thresholds": (np.dtype(np.float64), 1),
    "bin_offsets": (np.dtype(np.int64), 1),
    "log_new_weight": (np.dtype(np.float64), 1),
    "log_scale": (np.dtype(np.float64), 1),
    "log_dropped": (np.dtype(np.int64), 1),
    "log_offsets": (np.dtype(np.int64), 1),
}

#: Arrays a model without categorical features may leave out (files written
#: before categorical support); an absent one reads as all-zero flags / no sets.
OPTIONAL_ARRAY_SPECS = {
    "is_categorical": (np.dtype(np.uint8), 1),
    "cat_bitsets": (np.dtype(np.uint32), 1),
}
#: uint32 words per categorical split (one bit per bin, bins 0..255).
CAT_BITSET_WORDS = 8

# A stored string dtype may be wider than its longest label (``classes_`` keeps
# the dtype of ``y``), but not by more than this many characters: a header
# must not make the loader allocate more than the file holds.
_MAX_EXTRA_LABEL_CHARS = 64
#: Longest list a stored parameter may be (a per-feature list).
_MAX_PARAM_LIST = 1 << 20


class FormatError(ValueError):
    """A model file or state is malformed; the message names the field."""


# ------------------------------------------------------------------ registry
_MODEL_CLASSES = {}


def register_model_class(cls):
    """Make ``cls`` loadable from a model state (class decorator).

    The registry is the only way a stored ``class`` name becomes a class:
    names are looked up, never imported.
    """
    _MODEL_CLASSES[cls.__name__] = cls
    _MODEL_CLASSES[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def model_class(name):
    """The registered class stored under ``name`` (short or qualified)."""
    if not isinstance(name, str) or name not in _MODEL_CLASSES:
        known = sorted(n for n in _MODEL_CLASSES if "." not in n)
        raise FormatError(f"class: {name!r} is not a loadable dartboost model class "
                          f"(known: {known}).")
    return _MODEL_CLASSES[name]


# --------------------------------------------------------------- primitives
def _require(cond, field, message):
    if not cond:
        raise FormatError(f"{field}: {message}")


def _int_field(header, name, low=None, high=None):
    value = header.get(name)
    _require(isinstance(value, numbers.Integral) and not isinstance(value, bool), name,
             f"must be an integer, got {type(value).__name__}")
    value = int(value)
    _require(low is None or value >= low, name, f"{value} is below {low}")
    _require(high is None or value <= high, name, f"{value} is above {high}")
    return value


def _float_list(header, name):
    value = header.get(name, [])
    _require(isinstance(value, list) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value), name,
        "must be a list of numbers")
    return [float(v) for v in value]


def _check_array(arrays, name, size=None):
    dtype, ndim = ARRAY_SPECS[name] if name in ARRAY_SPECS else OPTIONAL_ARRAY_SPECS[name]
    arr = arrays[name]
    _require(isinstance(arr, np.ndarray), name, "is not an array")
    _require(arr.dtype == dtype, name, f"has dtype {arr.dtype}, expected {dtype}")
    _require(arr.ndim == ndim, name, f"has shape {arr.shape}, expected {ndim} dimension(s)")
    _require(size is None or arr.shape[0] == size, name,
             f"has {arr.shape[0]} entries, expected {size}")
    return arr


def _check_offsets(name, offsets, total):
    """Offsets into a flat array of length ``total``: 0 first, ``total`` last,
    non-decreasing."""
    _require(offsets.size >= 1 and offsets[0] == 0, name, "must start at 0")
    _require(offsets[-1] == total, name, f"must end at {total}, the length of the data "
                                         f"it indexes (ends at {offsets[-1]})")
    _require(bool(np.all(np.diff(offsets) >= 0)), name, "must be non-decreasing")


def _segment_ids(offsets):
    """Index of the segment of every element of the flat array."""
    return np.repeat(np.arange(offsets.size - 1), np.diff(offsets))


# ----------------------------------------------------------------- the state
def validate_state(header, arrays):
    """Check a model state; return the validated core fields.

    Parameters
    ----------
    header : dict
    arrays : dict of str to ndarray

    Returns
    -------
    dict
        ``n_features``, ``n_trees_per_iteration``, ``n_iter``, ``max_bins``.

    Raises
    ------
    FormatError
        Naming the first malformed field.
    """
    _require(isinstance(header, dict) and header.get("format") == FORMAT_NAME, "format",
             "not a dartboost model state (missing or wrong 'format' field)")
    version = header.get("format_version")
    _require(version == FORMAT_VERSION, "format_version",
             f"unsupported dartboost model format_version {version!r}; this version of "
             f"dartboost reads format_version {FORMAT_VERSION}")
    _require(isinstance(arrays, dict), "arrays", "must be a dict of arrays")
    missing = [name for name in ARRAY_SPECS if name not in arrays]
    _require(not missing, "arrays", f"model state is missing arrays: {missing}")

    n_features = _int_field(header, "n_features_in", low=1)
    K = _int_field(header, "n_trees_per_iteration", low=1)
    n_iter = _int_field(header, "n_iter", low=0)
    max_bins = _int_field(header, "max_bins", low=2, high=MAX_BINS)
    _int_field(header, "seed")
    _int_field(header, "best_iteration", low=0, high=n_iter)
    _float_list(header, "train_score")
    _float_list(header, "validation_score")
    names = header.get("feature_names_in")
    _require(names is None or (isinstance(names, list) and len(names) == n_features
                               and all(isinstance(n, str) for n in names)),
             "feature_names_in", f"must be null or a list of {n_features} strings")

    # sizes first: every later check may then index by them
    nodes = _check_array(arrays, "nodes")
    tree_offsets = _check_array(arrays, "tree_offsets", n_iter * K + 1)
    _check_offsets("tree_offsets", tree_offsets, nodes.shape[0])
    _require(bool(np.all(np.diff(tree_offsets) > 0)), "tree_offsets",
             "every tree needs at least one node")
    weights = _check_array(arrays, "tree_weights", n_iter)
    _require(bool(np.all(np.isfinite(weights))), "tree_weights", "must be finite")
    baseline = _check_array(arrays, "baseline", K)
    _require(bool(np.all(np.isfinite(baseline))), "baseline", "must be finite")
    for name, (dtype, _) in OPTIONAL_ARRAY_SPECS.items():
        if name not in arrays:
            arrays[name] = np.zeros(n_features if name == "is_categorical" else 0, dtype=dtype)
    _check_binning(arrays, n_features, max_bins)
    _check_trees(nodes, tree_offsets, n_features, arrays)
    _check_weight_log(arrays, n_iter, weights)
    return {"n_features": n_features, "n_trees_per_iteration": K, "n_iter": n_iter,
            "max_bins": max_bins}


def _check_binning(arrays, n_features, max_bins):
    thresholds = _check_array(arrays, "bin_thresholds")
    offsets = _check_array(arrays, "bin_offsets", n_features + 1)
    _check_offsets("bin_offsets", offsets, thresholds.shape[0])
    # bins 0..n_thresholds hold values, bin max_bins holds NaN: at most
    # max_bins - 1 thresholds per feature, or bins would collide (uint8)
    _require(bool(np.all(np.diff(offsets) <= max_bins - 1)), "bin_offsets",
             f"a feature has more than max_bins - 1 = {max_bins - 1} thresholds")
    _require(bool(np.all(np.isfinite(thresholds))), "bin_thresholds", "must be finite")
    same_feature = _segment_ids(offsets)
    inside = same_feature[1:] == same_feature[:-1]
    _require(bool(np.all(np.diff(thresholds)[inside] > 0)), "bin_thresholds",
             "must be strictly increasing within each feature")
    is_cat = _check_array(arrays, "is_categorical", n_features)
    _require(bool(np.all(is_cat <= 1)), "is_categorical", "must be 0 or 1")


def _check_trees(nodes, tree_offsets, n_features, arrays):
    tree_of = _segment_ids(tree_offsets)
    local = np.arange(nodes.shape[0]) - tree_offsets[:-1][tree_of]
    size = np.diff(tree_offsets)[tree_of]
    is_leaf = nodes["is_leaf"]
    _require(bool(np.all(is_leaf <= 1)), "nodes.is_leaf", "must be 0 or 1")
    _require(bool(np.all(nodes["missing_go_to_left"] <= 1)), "nodes.missing_go_to_left",
             "must be 0 or 1")
    _require(bool(np.all(np.isfinite(nodes["value"][is_leaf == 1]))), "nodes.value",
             "leaf values must be finite")
    inner = is_leaf == 0
    left, right = nodes["left"][inner].astype(np.int64), nodes["right"][inner].astype(np.int64)
    idx, n = local[inner], size[inner]
    # children after their parent (so every traversal ends) and inside the tree
    _require(bool(np.all((left > idx) & (left < n) & (right > idx) & (right < n))),
             "nodes.left/right", "model state contains a corrupt tree (child index out of "
                                 "range or before its parent)")
    feature = nodes["feature_idx"][inner]
    _require(bool(np.all((feature >= 0) & (feature < n_features))), "nodes.feature_idx",
             f"model state contains a corrupt tree (feature index outside [0, {n_features}))")
    # categorical (set) splits: num_threshold indexes cat_bitsets, and only
    # kept-category bins may be in a set (the pooled bin always goes right)
    b_off = arrays["bin_offsets"]
    cat_split = arrays["is_categorical"][feature] != 0
    words = _check_array(arrays, "cat_bitsets")
    _require(words.shape[0] % CAT_BITSET_WORDS == 0, "cat_bitsets",
             f"must hold {CAT_BITSET_WORDS} words per categorical split")
    n_sets = words.shape[0] // CAT_BITSET_WORDS
    set_idx = nodes["num_threshold"][inner][cat_split]
    _require(bool(np.all((set_idx >= 0) & (set_idx < n_sets) & (set_idx == np.floor(set_idx)))),
             "nodes.num_threshold", f"a categorical split's set index is not an integer in "
                                    f"[0, {n_sets})")
    _require(bool(np.all(nodes["bin_threshold"][inner][cat_split] == 0)),
             "nodes.bin_threshold", "must be 0 at a categorical split")
    if n_sets:
        bits = np.unpackbits(words.astype("<u4").reshape(n_sets, CAT_BITSET_WORDS).view(np.uint8),
                             axis=1, bitorder="little")
        n_kept = np.diff(b_off)[feature[cat_split]]
        sets = bits[set_idx.astype(np.int64)]
        beyond = np.arange(bits.shape[1])[None, :] >= n_kept[:, None]
        _require(not bool(np.any(sets & beyond)), "cat_bitsets",
                 "a categorical split's set holds a bin beyond its feature's categories")
    feature, inner_num = feature[~cat_split], np.flatnonzero(inner)[~cat_split]
    # the binned (training) and raw (predict) traversals must agree: the raw
    # threshold of a split is the binner's threshold of its bin
    n_thr = np.diff(b_off)[feature]
    b = nodes["bin_threshold"][inner_num].astype(np.int64)
    _require(bool(np.all(b <= n_thr)), "nodes.bin_threshold",
             "a split's bin is beyond its feature's bins")
    has_thr = b < n_thr
    expected = np.full(b.shape, np.inf)
    expected[has_thr] = arrays["bin_thresholds"][b_off[feature[has_thr]] + b[has_thr]]
    _require(bool(np.array_equal(nodes["num_threshold"][inner_num], expected)),
             "nodes.num_threshold", "disagrees with bin_thresholds at the split's bin")


def _check_weight_log(arrays, n_iter, weights):
    new_weight = _check_array(arrays, "log_new_weight", n_iter)
    scale = _check_array(arrays, "log_scale", n_iter)
    dropped = _check_array(arrays, "log_dropped")
    offsets = _check_array(arrays, "log_offsets", n_iter + 1)
    _check_offsets("log_offsets", offsets, dropped.shape[0])
    _require(bool(np.all(np.isfinite(new_weight))), "log_new_weight", "must be finite")
    _require(bool(np.all(np.isfinite(scale))), "log_scale", "must be finite")
    step = _segment_ids(offsets)
    # step t can only rescale iterations that exist before it, each once
    _require(bool(np.all((dropped >= 0) & (dropped < step))), "log_dropped",
             "a step drops an iteration that does not precede it")
    same_step = step[1:] == step[:-1]
    _require(bool(np.all(np.diff(dropped)[same_step] > 0)), "log_dropped",
             "dropped iterations of a step must be sorted and distinct")
    replayed = replay_weights(new_weight, scale, dropped, offsets)
    _require(bool(np.array_equal(replayed, weights)), "tree_weights",
             "do not match the replayed weight log")


def replay_weights(new_weight, scale, dropped, offsets, n_iterations=None):
    """Iteration weights after the first ``n_iterations`` steps of a weight log
    in array form (the same multiplications, in the same order, as
    :meth:`dartboost._dart.WeightLog.apply`)."""
    n = new_weight.shape[0] if n_iterations is None else n_iterations
    w = np.empty(n, dtype=np.float64)
    for t in range(n):
        d = dropped[offsets[t]:offsets[t + 1]]
        if d.size:
            w[d] = w[d] * scale[t]
        w[t] = new_weight[t]
    return w


# --------------------------------------------------------- estimator extras
def check_classes(header, n_classes):
    """``classes_`` of a classifier from its header, bounded and checked."""
    classes, dtype_str = header.get("classes"), header.get("classes_dtype")
    _require(isinstance(dtype_str, str) and len(dtype_str) <= 16, "classes_dtype",
             "must be a short numpy dtype string")
    try:
        dtype = np.dtype(dtype_str)
    except TypeError as exc:
        raise FormatError(f"classes_dtype: {dtype_str!r} is not a dtype ({exc})") from None
    _require(dtype.kind in "biufU", "classes_dtype",
             f"{dtype_str!r} is not a numeric, boolean or string dtype")
    _require(isinstance(classes, list) and len(classes) == n_classes, "classes",
             f"must be a list of {n_classes} labels (the model's class count)")
    if dtype.kind == "U":
        _require(all(isinstance(c, str) for c in classes), "classes", "must be strings")
        longest = max(len(c) for c in classes)
        _require(dtype.itemsize // 4 <= longest + _MAX_EXTRA_LABEL_CHARS, "classes_dtype",
                 f"{dtype_str!r} is far wider than the longest label ({longest} characters)")
    else:
        _require(all(isinstance(c, numbers.Real) for c in classes), "classes",
                 "must be numbers")
    try:
        arr = np.asarray(classes, dtype=dtype)
    except (OverflowError, ValueError, TypeError) as exc:
        raise FormatError(f"classes: cannot be represented as {dtype_str!r} ({exc})") from None
    _require(arr.ndim == 1 and (arr.size < 2 or bool(np.all(arr[1:] > arr[:-1]))),
             "classes", "must be sorted and distinct")
    _require(arr.tolist() == classes, "classes",
             f"change value when stored as {dtype_str!r}")
    return arr


def check_bool(header, name):
    value = header.get(name)
    _require(isinstance(value, bool), name, "must be true or false")
    return value


# ----------------------------------------------------------------- params
def check_params(cls, params):
    """Stored constructor parameters: known names, plain JSON scalars."""
    _require(isinstance(params, dict), "params", "must be an object")
    known = set(cls().get_params(deep=False)) - {"callbacks"}
    unknown = sorted(set(params) - known)
    _require(not unknown, "params", f"unknown parameter(s) {unknown} for {cls.__name__}")
    for name, value in params.items():
        _require(_plain_param(value, depth=2) <= _MAX_PARAM_LIST, f"params.{name}",
                 "must be a plain number, string, boolean or null, or a list or object of "
                 f"those (lists of lists for feature groups), at most {_MAX_PARAM_LIST} "
                 "entries")
    return params


def _plain_param(value, depth):
    """Entries of a stored parameter value, or a huge number when it is not
    plain data: a scalar; a list (of lists, ``depth`` levels) or a str-keyed
    object of scalars (per-feature lists and groups, e.g. categorical_features,
    monotonic_cst, interaction_cst)."""
    bad = _MAX_PARAM_LIST + 1
    if value is None or isinstance(value, (bool, numbers.Real, str)):
        return 1
    if isinstance(value, dict) and depth > 0:
        if len(value) > _MAX_PARAM_LIST or not all(isinstance(k, str) for k in value):
            return bad
        return sum(min(bad, _plain_param(v, 0)) for v in value.values())
    if isinstance(value, list) and depth > 0:
        if len(value) > _MAX_PARAM_LIST:
            return bad
        total = 0
        for v in value:
            total += _plain_param(v, depth - 1)
            if total > _MAX_PARAM_LIST:
                return bad
        return total
    return bad

"""Fitted dartboost models as plain state: a JSON-able header and numpy arrays.

This is the one place that knows which attributes make up a fitted model. The
store's stable on-disk format and the training checkpoints are built on it
(see ``docs/contracts.md``); nothing here uses pickle.
"""
import numpy as np

from ._binning import BinMapper
from ._common import NODE_DTYPE, effective_n_threads
from ._dart import WeightLog
from ._model_format import (FORMAT_NAME, FORMAT_VERSION, FormatError, check_params,
                            model_class, validate_state)

# params that are not plain data and are not stored
_UNSTORED_PARAMS = ("callbacks",)


def _plain(value):
    """numpy scalars -> Python scalars, for JSON."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def get_state(est):
    """``(header, arrays)`` of a fitted (or being-fitted) estimator."""
    if not hasattr(est, "_trees"):
        from sklearn.exceptions import NotFittedError
        raise NotFittedError(f"This {type(est).__name__} instance is not fitted yet.")
    params = {}
    for name, value in est.get_params(deep=False).items():
        if name in _UNSTORED_PARAMS:
            continue
        if name == "random_state" and not (value is None or isinstance(value, (int, np.integer))):
            value = None  # a RandomState object is not data; the resolved seed is kept
        params[name] = _plain(value)
    trees = est._trees
    offsets = np.zeros(len(trees) + 1, dtype=np.int64)
    np.cumsum([t.shape[0] for t in trees], out=offsets[1:])
    arrays = {
        "nodes": np.concatenate(trees) if trees else np.zeros(0, dtype=NODE_DTYPE),
        "tree_offsets": offsets,
        "tree_weights": np.asarray(est._weights, dtype=np.float64),
        "baseline": np.asarray(est._baseline, dtype=np.float64),
        **est._bin_mapper.to_arrays(),
        **est._weight_log.to_arrays(),
    }
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "class": type(est).__name__,
        "params": params,
        "n_features_in": int(est.n_features_in_),
        "feature_names_in": (list(map(str, est.feature_names_in_))
                             if hasattr(est, "feature_names_in_") else None),
        "n_trees_per_iteration": int(est.n_trees_per_iteration_),
        "n_iter": len(est._weights),
        "seed": int(est._seed),
        "max_bins": int(est._bin_mapper.max_bins),
        "train_score": [float(s) for s in est.train_score_],
        "validation_score": [float(s) for s in est.validation_score_],
        "best_iteration": int(getattr(est, "best_iteration_", len(est._weights))),
    }
    header.update(est._extra_state(arrays))
    return header, arrays


def set_state(est, header, arrays):
    """Load ``(header, arrays)`` into ``est`` (same class as in the header)."""
    validate_state(header, arrays)
    if model_class(header.get("class")) is not type(est):
        raise FormatError(f"class: state is of a {header['class']}, not a "
                          f"{type(est).__name__}.")
    est.set_params(**check_params(type(est), header.get("params")))
    try:
        est._validate_params()
    except ValueError as exc:
        raise FormatError(f"params: {exc}") from None
    nodes = np.asarray(arrays["nodes"])
    offsets = np.asarray(arrays["tree_offsets"], dtype=np.int64)
    est._trees = [nodes[a:b].copy() for a, b in zip(offsets[:-1], offsets[1:])]
    est._weights = [float(w) for w in arrays["tree_weights"]]
    est._weight_log = WeightLog.from_arrays(arrays["log_new_weight"], arrays["log_scale"],
                                            arrays["log_dropped"], arrays["log_offsets"])
    est._baseline = np.asarray(arrays["baseline"], dtype=np.float64).copy()
    est._bin_mapper = BinMapper.from_arrays(header["max_bins"], arrays["bin_thresholds"],
                                            arrays["bin_offsets"],
                                            effective_n_threads(est.n_jobs))
    est.n_features_in_ = header["n_features_in"]
    if header.get("feature_names_in") is not None:
        est.feature_names_in_ = np.asarray(header["feature_names_in"], dtype=object)
    elif hasattr(est, "feature_names_in_"):
        del est.feature_names_in_
    est.n_trees_per_iteration_ = header["n_trees_per_iteration"]
    est.n_iter_ = header["n_iter"]
    est._seed = header["seed"]
    est.train_score_ = list(header["train_score"])
    est.validation_score_ = list(header["validation_score"])
    est.best_iteration_ = header["best_iteration"]
    est._load_extra_state(header, arrays)
    try:
        loss = est._make_loss()
    except ValueError as exc:
        raise FormatError(f"params: {exc}") from None
    if loss.n_trees_per_iteration != est.n_trees_per_iteration_:
        raise FormatError(f"n_trees_per_iteration: {est.n_trees_per_iteration_} does not "
                          f"match the model's loss ({loss.n_trees_per_iteration})")
    est._predictor_cache = est._build_predictor_arrays()
    return est


def estimator_from_state(header, arrays, class_name=None):
    """A new estimator rebuilt from ``(header, arrays)``.

    ``class_name``, if given (the store records the qualified class beside the
    state), must name the same registered class as the state.
    """
    validate_state(header, arrays)
    cls = model_class(header.get("class"))
    if class_name is not None and model_class(class_name) is not cls:
        raise FormatError(f"class: {class_name!r} disagrees with the state's "
                          f"{header.get('class')!r}")
    return set_state(cls(), header, arrays)

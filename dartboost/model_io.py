"""Fitted dartboost models as plain state: a JSON-able header and numpy arrays.

This is the one place that knows which attributes make up a fitted model. The
store's stable on-disk format and the training checkpoints are built on it
(see ``docs/contracts.md``); nothing here uses pickle.
"""
import numpy as np

from ._binning import BinMapper
from ._common import NODE_DTYPE, effective_n_threads
from ._dart import WeightLog

FORMAT_NAME = "dartboost-model"
FORMAT_VERSION = 1

# params that are not plain data and are not stored
_UNSTORED_PARAMS = ("callbacks",)


def _plain(value):
    """numpy scalars -> Python scalars, for JSON."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _estimator_classes():
    from .estimators import DartClassifier, DartRegressor
    classes = {"DartRegressor": DartRegressor, "DartClassifier": DartClassifier}
    try:
        from .ranking import DartRanker
        classes["DartRanker"] = DartRanker
    except ImportError:  # pragma: no cover - ranking not built yet
        pass
    return classes


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


def _check_header(header, arrays):
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ValueError("Not a dartboost model state (missing or wrong 'format' field).")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"Unsupported dartboost model format_version {version!r}; this "
                         f"version of dartboost reads format_version {FORMAT_VERSION}.")
    required = ("nodes", "tree_offsets", "tree_weights", "baseline", "bin_thresholds",
                "bin_offsets", "log_new_weight", "log_scale", "log_dropped", "log_offsets")
    missing = [name for name in required if name not in arrays]
    if missing:
        raise ValueError(f"Model state is missing arrays: {missing}.")
    nodes = arrays["nodes"]
    if nodes.dtype != NODE_DTYPE:
        raise ValueError("Model state 'nodes' array has an unexpected dtype.")
    offsets = np.asarray(arrays["tree_offsets"])
    K = header["n_trees_per_iteration"]
    n_iter = header["n_iter"]
    if (offsets.ndim != 1 or offsets.size != n_iter * K + 1 or offsets[0] != 0
            or offsets[-1] != nodes.shape[0] or np.any(np.diff(offsets) <= 0)):
        raise ValueError("Model state 'tree_offsets' is inconsistent with the nodes.")
    if arrays["tree_weights"].shape != (n_iter,) or arrays["log_new_weight"].shape != (n_iter,):
        raise ValueError("Model state weights are inconsistent with n_iter.")
    n_features = header["n_features_in"]
    for start, stop in zip(offsets[:-1], offsets[1:]):
        tree = nodes[start:stop]
        inner = tree["is_leaf"] == 0
        n = stop - start
        if (np.any(tree["left"][inner] >= n) or np.any(tree["right"][inner] >= n)
                or np.any(tree["feature_idx"][inner] >= n_features)
                or np.any(tree["feature_idx"][inner] < 0)):
            raise ValueError("Model state contains a corrupt tree (child or feature index "
                             "out of range).")
        # children must come after their parent, so traversal always terminates
        idx = np.flatnonzero(inner)
        if np.any(tree["left"][inner] <= idx) or np.any(tree["right"][inner] <= idx):
            raise ValueError("Model state contains a corrupt tree (cycle in node links).")


def set_state(est, header, arrays):
    """Load ``(header, arrays)`` into ``est`` (same class as in the header)."""
    _check_header(header, arrays)
    if header["class"] != type(est).__name__:
        raise ValueError(f"State is of a {header['class']}, not a {type(est).__name__}.")
    est.set_params(**header["params"])
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
    est._predictor_cache = est._build_predictor_arrays()
    return est


def estimator_from_state(header, arrays):
    """A new estimator rebuilt from ``(header, arrays)``."""
    classes = _estimator_classes()
    name = header.get("class") if isinstance(header, dict) else None
    if name not in classes:
        raise ValueError(f"Unknown dartboost estimator class {name!r} in model state.")
    return set_state(classes[name](), header, arrays)

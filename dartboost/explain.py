"""SHAP values of dartboost models: exact path-dependent TreeSHAP, compiled.

:func:`shap_values` follows LightGBM's ``predict(X, pred_contrib=True)``
layout: ``n_features + 1`` columns per output, the expected value (the
model's raw score with no feature known) last; for ``K`` outputs (multiclass,
multi-output regression) ``K`` such blocks side by side, shape
``(n, K * (n_features + 1))``. Each row sums, per output, to the raw score
(``decision_function`` / the regressor's raw output) up to rounding: the DART
weight of every tree is part of its leaf values.

:func:`shap_interaction_values` follows XGBoost's ``pred_interactions``
layout: ``(n, n_features + 1, n_features + 1)`` (``(n, K, ...)`` for ``K``
outputs), main effects on the diagonal, the expected value at ``[-1, -1]``;
rows sum to :func:`shap_values`.

:func:`to_shap_model` converts a model for the ``shap`` package's
``TreeExplainer`` (and so its plots).
"""
import numpy as np
from sklearn.utils.validation import check_array

from ._common import effective_n_threads
from ._tree_view import ensemble_view, flat_arrays, require_numerical

__all__ = ["expected_value", "shap_values", "shap_interaction_values", "to_shap_model"]


def _check_X(view, X):
    X = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan", order="C")
    if X.shape[1] != view.n_features:
        raise ValueError(f"X has {X.shape[1]} features, but the model was fitted with "
                         f"{view.n_features} features.")
    return X


def _check_covers(flat):
    if flat["cover"].size and not np.all(flat["cover"] > 0):
        raise ValueError("TreeSHAP needs a positive cover (training row count) at every "
                         "node; this model has nodes with zero cover.")


def expected_value(model, iteration_range=None):
    """Raw score with no feature known, per output, shape ``(n_outputs,)``:
    the baseline plus each tree's cover-weighted mean leaf value times its
    weight (what TreeSHAP attributes nothing to)."""
    view = ensemble_view(model, iteration_range)
    out = view.baseline.copy()
    for tree in view.trees:
        leaves = tree.is_leaf
        out[tree.output] += (tree.weight * np.dot(tree.cover[leaves], tree.value[leaves])
                             / tree.cover[0])
    return out


def _threads(n_jobs, n_rows):
    return max(1, min(effective_n_threads(n_jobs), n_rows))


def _path_buffers(n_threads, max_depth):
    from ._cext import _treeshap
    return np.zeros((n_threads, _treeshap.path_buffer_bytes(max_depth)), dtype=np.uint8)


def _shap_3d(view, X, n_jobs):
    """SHAP values of shape ``(n, K, n_features + 1)``."""
    from ._cext import _treeshap
    flat = flat_arrays(view)
    _check_covers(flat)
    n, M, K = X.shape[0], view.n_features, view.n_outputs
    out = np.zeros((n, K, M + 1), dtype=np.float64)
    n_threads = _threads(n_jobs, n)
    _treeshap.shap_values(flat["feature"], flat["threshold"], flat["missing_left"],
                          flat["left"], flat["right"], flat["value"], flat["cover"],
                          flat["tree_offsets"], flat["tree_output"], X,
                          _path_buffers(n_threads, flat["max_depth"]), out,
                          flat["cat_start"], flat["cat_stop"], flat["cat_values"])
    out[:, :, M] = expected_value(view)
    return out


def shap_values(model, X, *, iteration_range=None, n_jobs=None):
    """Exact path-dependent TreeSHAP values (LightGBM's ``pred_contrib`` layout).

    Parameters
    ----------
    model : fitted dartboost estimator (or its ``booster_``)
    X : array-like of shape (n_samples, n_features)
        NaN marks a missing value (it follows the split's missing direction).
    iteration_range : (start, stop) or None
        Explain only the trees of iterations ``start <= t < stop``, with the
        DART weights they had after iteration ``stop`` (``(0, t)``: the model
        exactly as it was after ``t`` iterations, as ``staged_predict`` sees it).
    n_jobs : int or None, default=None
        Threads (``None``: all cores).

    Returns
    -------
    ndarray of shape (n_samples, n_features + 1) or (n_samples, K * (n_features + 1))
        Column ``j`` of a block: feature ``j``'s contribution to the raw score;
        the block's last column: the expected value. Each block sums to the
        raw score of its output (class ``k``'s margin for multiclass).
    """
    view = ensemble_view(model, iteration_range)
    X = _check_X(view, X)
    out = _shap_3d(view, X, n_jobs)
    return out.reshape(X.shape[0], -1)


def shap_interaction_values(model, X, *, iteration_range=None, n_jobs=None):
    """Exact SHAP interaction values (XGBoost's ``pred_interactions`` layout).

    Parameters
    ----------
    model : fitted dartboost estimator (or its ``booster_``)
    X : array-like of shape (n_samples, n_features)
    iteration_range : (start, stop) or None
        As in :func:`shap_values`.
    n_jobs : int or None, default=None

    Returns
    -------
    ndarray of shape (n_samples, n_features + 1, n_features + 1), or
    (n_samples, K, n_features + 1, n_features + 1) for ``K > 1`` outputs
        ``[i, a, b]``: half of the interaction of features ``a`` and ``b``
        (symmetric; the pair's total effect is ``[a, b] + [b, a]``); the
        diagonal holds main effects and ``[-1, -1]`` the expected value.
        Summing over the last axis gives :func:`shap_values`.
    """
    from ._cext import _treeshap
    view = ensemble_view(model, iteration_range)
    X = _check_X(view, X)
    flat = flat_arrays(view)
    _check_covers(flat)
    n, M, K = X.shape[0], view.n_features, view.n_outputs
    features = [np.unique(t.feature[t.feature >= 0]).astype(np.int32) for t in view.trees]
    feature_offsets = np.zeros(len(features) + 1, dtype=np.int64)
    np.cumsum([f.size for f in features], out=feature_offsets[1:])
    tree_features = (np.concatenate(features) if features else np.zeros(0, dtype=np.int32))
    out = np.zeros((n, K, M + 1, M + 1), dtype=np.float64)
    n_threads = _threads(n_jobs, n)
    _treeshap.shap_interaction_values(
        flat["feature"], flat["threshold"], flat["missing_left"], flat["left"], flat["right"],
        flat["value"], flat["cover"], flat["tree_offsets"], flat["tree_output"],
        feature_offsets, np.ascontiguousarray(tree_features, dtype=np.int32), X,
        _path_buffers(n_threads, flat["max_depth"]), np.zeros((n_threads, 3 * (M + 1))), out,
        flat["cat_start"], flat["cat_stop"], flat["cat_values"])
    out[:, :, M, M] = expected_value(view)
    return out[:, 0] if K == 1 else out


def to_shap_model(model):
    """The model as the ``shap`` package's dictionary format, for
    ``shap.TreeExplainer(to_shap_model(est))``.

    Each tree's leaf values carry its DART weight; a tree only feeds its own
    output column (class), so ``TreeExplainer`` gives per-class values for
    multiclass models. Explanations are of the raw score (margin / log-odds /
    log of the Poisson mean), as with LightGBM and XGBoost.
    """
    view = ensemble_view(model)
    require_numerical(view, "the shap package's tree format (thresholds only)")
    K = view.n_outputs
    trees = []
    for t in view.trees:
        values = np.zeros((t.n_nodes, K))
        values[:, t.output] = t.weight * t.value
        inner = ~t.is_leaf
        trees.append({
            "children_left": t.left.astype(np.int32),
            "children_right": t.right.astype(np.int32),
            "children_default": np.where(inner, np.where(t.missing_left, t.left, t.right),
                                         -1).astype(np.int32),
            "features": np.where(inner, t.feature, -2).astype(np.int32),
            "thresholds": np.where(inner, t.threshold, 0.0).astype(np.float64),
            "values": values,
            "node_sample_weight": t.cover.astype(np.float64),
        })
    base = view.baseline if K > 1 else view.baseline[0]
    return {
        "trees": trees,
        "base_offset": base,
        "tree_output": "raw_value",
        "objective": "squared_error",  # only used for model_output="loss"; raw scores here
        "input_dtype": np.float64,
        "internal_dtype": np.float64,
    }

"""Look inside a fitted model: :func:`dump_model` (JSON) and :func:`trees_to_dataframe`.

Both take a fitted estimator, its ``booster_``, or an
:class:`~dartboost._tree_view.EnsembleView`. The JSON schema is documented in
docs/explain.md ("Inspection").
"""
import numpy as np

from ._tree_view import ensemble_view

__all__ = ["DUMP_FORMAT", "DUMP_VERSION", "dump_model", "trees_to_dataframe"]

DUMP_FORMAT = "dartboost-dump"
DUMP_VERSION = 1


def _node_depths(tree):
    depth = np.zeros(tree.n_nodes, dtype=np.int64)
    parent = np.full(tree.n_nodes, -1, dtype=np.int64)
    for node in range(tree.n_nodes):  # children always come after their parent
        if tree.left[node] >= 0:
            for child in (tree.left[node], tree.right[node]):
                depth[child] = depth[node] + 1
                parent[child] = node
    return depth, parent


def _node_categories(tree):
    return tree.categories if tree.categories is not None else [None] * tree.n_nodes


def _finite_or_none(x):
    # strict JSON has no infinity: a split threshold of +inf (every
    # non-missing value goes left) is written as null
    return float(x) if np.isfinite(x) else None


def _dump_tree(view, j, tree):
    nodes = []
    for node in range(tree.n_nodes):
        rec = {"node": node, "cover": float(tree.cover[node]),
               "hessian": float(tree.hessian[node])}
        if tree.left[node] < 0:
            rec["leaf_value"] = float(tree.value[node])
        else:
            f = int(tree.feature[node])
            cats = tree.categories[node] if tree.categories is not None else None
            rec.update({
                "feature": f,
                "feature_name": view.feature_name(f),
                # a categorical split: the raw categories that go left
                "threshold": (cats.tolist() if cats is not None
                              else _finite_or_none(tree.threshold[node])),
                "decision_type": "==" if cats is not None else "<=",
                "missing": "left" if tree.missing_left[node] else "right",
                "gain": float(tree.gain[node]),
                "internal_value": float(tree.value[node]),
                "left": int(tree.left[node]),
                "right": int(tree.right[node]),
            })
        nodes.append(rec)
    return {
        "tree_index": j,
        "iteration": tree.iteration,
        "output": tree.output,
        "weight": tree.weight,
        "n_leaves": int(tree.is_leaf.sum()),
        "depth": tree.depth(),
        "nodes": nodes,
    }


def _plain_params(params):
    out = {}
    for k, v in params.items():
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or isinstance(v, (bool, int, float, str)):
            out[k] = v
        else:
            out[k] = repr(v)
    return out


def dump_model(model):
    """The whole model as a JSON-serialisable dict (strict JSON: no NaN/inf).

    Parameters
    ----------
    model : fitted dartboost estimator, its ``booster_``, or an EnsembleView

    Returns
    -------
    dict
        ``format``, ``version``, ``estimator``, ``link``, ``n_features``,
        ``feature_names``, ``n_outputs``, ``n_iterations``, ``classes``,
        ``baseline``, ``params`` and ``trees``: one dict per tree with its
        ``tree_index``, ``iteration``, ``output``, (DART) ``weight``,
        ``n_leaves``, ``depth`` and a flat list ``nodes`` (node 0 is the root;
        splits name their ``left``/``right`` children by node number).
        A row's raw score for output ``k`` is ``baseline[k]`` plus, over the
        trees with ``output == k``, ``weight * leaf_value`` of the leaf it reaches.
    """
    view = ensemble_view(model)
    classes = view.classes
    return {
        "format": DUMP_FORMAT,
        "version": DUMP_VERSION,
        "estimator": view.estimator_class,
        "link": view.link,
        "n_features": view.n_features,
        "feature_names": [view.feature_name(j) for j in range(view.n_features)],
        "n_outputs": view.n_outputs,
        "n_iterations": view.n_iterations,
        "classes": None if classes is None else list(classes),
        "baseline": [float(b) for b in view.baseline],
        "params": _plain_params(view.params),
        "trees": [_dump_tree(view, j, t) for j, t in enumerate(view.trees)],
    }


def trees_to_dataframe(model):
    """One row per node of every tree, as a pandas DataFrame.

    Columns: ``tree_index``, ``iteration``, ``output``, ``tree_weight``,
    ``node_index``, ``node_depth``, ``is_leaf``, ``left_child``,
    ``right_child``, ``parent_index`` (``-1`` where none), ``split_feature``
    (name; ``None`` at leaves), ``split_feature_index`` (``-1`` at leaves),
    ``threshold`` (``x <= threshold`` goes left; NaN at leaves and
    categorical splits), ``decision_type`` (``"<="``, or ``"=="`` for a
    categorical split), ``categories`` (its left categories as a list;
    ``None`` elsewhere),
    ``missing_direction`` (``"left"``/``"right"``; ``None`` at leaves),
    ``split_gain``, ``value`` (unweighted node value), ``weighted_value``
    (``tree_weight * value``: the leaf's contribution to the raw score),
    ``count`` (training rows) and ``hessian_sum``.
    """
    import pandas as pd

    view = ensemble_view(model)
    frames = []
    for j, tree in enumerate(view.trees):
        depth, parent = _node_depths(tree)
        leaf = tree.is_leaf
        frames.append(pd.DataFrame({
            "tree_index": j,
            "iteration": tree.iteration,
            "output": tree.output,
            "tree_weight": tree.weight,
            "node_index": np.arange(tree.n_nodes),
            "node_depth": depth,
            "is_leaf": leaf,
            "left_child": tree.left.astype(np.int64),
            "right_child": tree.right.astype(np.int64),
            "parent_index": parent,
            "split_feature": [None if lf else view.feature_name(f)
                              for f, lf in zip(tree.feature, leaf)],
            "split_feature_index": tree.feature.astype(np.int64),
            "threshold": np.where(leaf, np.nan, tree.threshold),
            "decision_type": [None if lf else ("==" if cats is not None else "<=")
                              for lf, cats in zip(leaf, _node_categories(tree))],
            "categories": [None if c is None else c.tolist() for c in _node_categories(tree)],
            "missing_direction": [None if lf else ("left" if ml else "right")
                                  for ml, lf in zip(tree.missing_left, leaf)],
            "split_gain": tree.gain,
            "value": tree.value,
            "weighted_value": tree.weight * tree.value,
            "count": tree.cover.astype(np.int64),
            "hessian_sum": tree.hessian,
        }))
    if not frames:
        raise ValueError("The model has no trees.")
    return pd.concat(frames, ignore_index=True)

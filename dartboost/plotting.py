"""matplotlib plots of fitted models: importance, metric curves, a tree, DART weights.

Every function takes a fitted estimator (or its ``booster_`` / an
EnsembleView), draws on ``ax`` (a new figure's axes when ``None``) and
returns the axes. matplotlib is optional (the ``plot`` extra) and imported
only when a plot is drawn.
"""
import numpy as np

from ._tree_view import ensemble_view

__all__ = ["feature_importance", "plot_importance", "plot_metric", "plot_tree",
           "plot_weight_history"]


def _axes(ax, figsize=None):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt
    _, ax = plt.subplots(figsize=figsize)
    return ax


def feature_importance(model, importance_type="gain"):
    """Per-feature importance, not normalised.

    ``"gain"``: the split gains of every tree times the tree's (DART) weight,
    as ``feature_importances_`` (before its normalisation); ``"split"``: how
    many splits use the feature.
    """
    if importance_type not in ("gain", "split"):
        raise ValueError(f"importance_type must be 'gain' or 'split', got {importance_type!r}.")
    view = ensemble_view(model)
    imp = np.zeros(view.n_features)
    for tree in view.trees:
        split = ~tree.is_leaf
        add = tree.weight * tree.gain[split] if importance_type == "gain" else 1.0
        np.add.at(imp, tree.feature[split], add)
    return imp


def plot_importance(model, *, importance_type="gain", max_num_features=None, ax=None,
                    title="Feature importance"):
    """Horizontal bars of :func:`feature_importance`, largest on top; features
    never used are left out."""
    view = ensemble_view(model)
    imp = feature_importance(view, importance_type)
    order = [j for j in np.argsort(imp, kind="stable")[::-1] if imp[j] > 0]
    if max_num_features is not None:
        order = order[:max_num_features]
    if not order:
        raise ValueError("No feature is used by any split; nothing to plot.")
    ax = _axes(ax)
    order = order[::-1]  # barh draws bottom-up
    ax.barh(range(len(order)), imp[order])
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels([view.feature_name(j) for j in order])
    ax.set_xlabel("total gain x tree weight" if importance_type == "gain" else "splits")
    ax.set_title(title)
    return ax


def plot_metric(model, metric=None, *, ax=None, title=None):
    """One evaluation metric per iteration for every eval set (LightGBM's
    ``plot_metric``), from ``evals_result_``.

    Parameters
    ----------
    metric : str, optional
        Which metric of ``evals_result_`` to draw (default: the first one
        recorded). A model with no ``evals_result_`` (a model file of an older
        version) falls back to ``train_score_`` / ``validation_score_``.
    """
    results = getattr(model, "evals_result_", None) or {}
    curves = {}
    if results:
        recorded = list(dict.fromkeys(m for per_set in results.values() for m in per_set))
        metric = recorded[0] if metric is None else metric
        if metric not in recorded:
            raise ValueError(f"metric {metric!r} was not recorded; the model has {recorded}.")
        curves = {name: per_set[metric] for name, per_set in results.items() if metric in per_set}
        ylabel = metric
    else:
        view = ensemble_view(model)
        curves = {name: scores for name, scores in (("train", view.train_score),
                                                    ("validation", view.validation_score))
                  if scores}
        ylabel = "score (higher is better)"
    if not curves:
        raise ValueError("The model recorded no scores: fit with an eval_set (or with "
                         "early_stopping=True) to record them.")
    ax = _axes(ax)
    for name, values in curves.items():
        ax.plot(np.arange(len(values)), values, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel} per iteration")
    ax.legend()
    return ax


def _tree_layout(tree):
    """x (leaves in order, parents centred over children) and depth per node."""
    x = np.zeros(tree.n_nodes)
    depth = np.zeros(tree.n_nodes, dtype=int)
    for node in range(tree.n_nodes):
        if tree.left[node] >= 0:
            depth[tree.left[node]] = depth[tree.right[node]] = depth[node] + 1
    next_leaf = 0
    stack = [(0, False)]
    while stack:  # post-order without recursion: deep trees are fine
        node, visited = stack.pop()
        if tree.left[node] < 0:
            x[node] = next_leaf
            next_leaf += 1
        elif visited:
            x[node] = (x[tree.left[node]] + x[tree.right[node]]) / 2
        else:
            stack += [(node, True), (tree.right[node], False), (tree.left[node], False)]
    return x, depth


def plot_tree(model, tree_index=0, *, ax=None, precision=3, show_info=("cover",)):
    """Draw one tree: splits as ``feature <= threshold`` (the missing-value
    direction marked), leaves with their weighted value (the contribution to
    the raw score).

    Parameters
    ----------
    tree_index : int
        Index in training order (iteration ``t``, output ``k`` is
        ``t * n_outputs + k``).
    show_info : tuple of {"cover", "gain", "value"}
        Extra lines per node.
    """
    view = ensemble_view(model)
    if not -len(view.trees) <= tree_index < len(view.trees):
        raise IndexError(f"tree_index {tree_index} out of range; the model has "
                         f"{len(view.trees)} trees.")
    unknown = set(show_info) - {"cover", "gain", "value"}
    if unknown:
        raise ValueError(f"Unknown show_info entries {sorted(unknown)}.")
    tree = view.trees[tree_index]
    x, depth = _tree_layout(tree)
    width = max(x.max(), 1)
    ax = _axes(ax, figsize=(max(6, 1.6 * (width + 1)), max(3, 1.3 * (depth.max() + 1))))
    fmt = f"{{:.{precision}g}}"
    for node in range(tree.n_nodes):
        if tree.left[node] < 0:
            lines = [f"leaf {fmt.format(tree.weight * tree.value[node])}"]
        else:
            left_arrow = " (NaN)" if tree.missing_left[node] else ""
            cats = tree.categories[node] if tree.categories is not None else None
            if cats is not None:  # a categorical split: its left set
                shown = ", ".join(fmt.format(c) for c in cats[:6])
                lines = [f"{view.feature_name(tree.feature[node])} in "
                         f"{{{shown}{', ...' if cats.size > 6 else ''}}}{left_arrow}"]
            else:
                lines = [f"{view.feature_name(tree.feature[node])} <= "
                         f"{fmt.format(tree.threshold[node])}{left_arrow}"]
            if "gain" in show_info:
                lines.append(f"gain {fmt.format(tree.gain[node])}")
        if "cover" in show_info:
            lines.append(f"count {int(tree.cover[node])}")
        if "value" in show_info and tree.left[node] >= 0:
            lines.append(f"value {fmt.format(tree.weight * tree.value[node])}")
        box = dict(boxstyle="round", fc="#e8f0fe" if tree.left[node] >= 0 else "#eaf7ea")
        ax.text(x[node], -depth[node], "\n".join(lines), ha="center", va="center",
                fontsize=8, bbox=box, gid=f"node-{node}")
        for child, label in ((tree.left[node], "yes"), (tree.right[node], "no")):
            if child >= 0:
                ax.plot([x[node], x[child]], [-depth[node], -depth[child]], color="0.5",
                        zorder=0)
                ax.text((x[node] + x[child]) / 2, -(depth[node] + depth[child]) / 2, label,
                        fontsize=7, color="0.3", ha="center")
    ax.set_xlim(-0.7, width + 0.7)
    ax.set_ylim(-depth.max() - 0.6, 0.6)
    ax.set_axis_off()
    ax.set_title(f"tree {tree_index} (iteration {tree.iteration}, output {tree.output}, "
                 f"weight {fmt.format(tree.weight)})")
    return ax


def plot_weight_history(model, iterations=None, *, ax=None, max_lines=10):
    """How DART rescaled trees over training: the weight of chosen iterations'
    trees after every later iteration (flat lines for MART).

    Parameters
    ----------
    iterations : list of int or None
        Iterations to follow; by default up to ``max_lines`` spread evenly.
    """
    view = ensemble_view(model)
    T = view.n_iterations
    if T == 0:
        raise ValueError("The model has no iterations.")
    history = view.weight_history()
    if iterations is None:
        iterations = np.unique(np.linspace(0, T - 1, min(T, max_lines)).astype(int))
    iterations = [int(i) for i in iterations]
    bad = [i for i in iterations if not 0 <= i < T]
    if bad:
        raise IndexError(f"iterations {bad} out of range; the model has {T} iterations.")
    ax = _axes(ax)
    for i in iterations:
        ax.plot(np.arange(i, T), history[i:, i], label=f"iteration {i}")
    ax.set_xlabel("after iteration")
    ax.set_ylabel("tree weight")
    ax.set_title("DART weight history")
    ax.legend(fontsize=7)
    return ax
